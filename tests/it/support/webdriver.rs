//! A real headless Chromium driven through ChromeDriver's W3C WebDriver
//! protocol (JSON over HTTP on 127.0.0.1), for the page's browser tests.
//! Debian's `chromium` and `chromium-driver` packages (scripts/setup.sh).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Start ChromeDriver and a headless Chromium with a fresh profile;
    /// `scripts` false turns JavaScript off in the pages.
    pub fn start(scripts: bool) -> Browser {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "{CHROMEDRIVER} or {CHROMIUM} is missing: run scripts/setup.sh (packages chromium, chromium-driver)"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        let deadline = Instant::now() + Duration::from_secs(20);
        while agent.get(&format!("{base}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        // Flags that keep a headless Chromium on this machine: no sandbox
        // as root, and no background connections to the outside.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut options = json!({ "binary": CHROMIUM, "args": args });
        if !scripts {
            options["prefs"] = json!({ "profile.managed_default_content_settings.javascript": 2 });
        }
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            agent,
            _profile: profile,
        };
        let v = b.send(
            "POST",
            "/session",
            json!({ "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": options,
            }}}),
        );
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b
    }

    fn send(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let req = self.agent.request(method, &url);
        let result = match method {
            "GET" | "DELETE" => req.call(),
            _ => req.send_json(body),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => {
                let v: Value = r.into_json().unwrap_or(Value::Null);
                panic!("WebDriver {method} {path}: {v}");
            }
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        };
        let v: Value = resp.into_json().unwrap();
        v.get("value").cloned().unwrap_or(Value::Null)
    }

    fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        self.send(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url }));
    }

    pub fn url(&self) -> String {
        self.cmd("GET", "/url", Value::Null)
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Wait until the address contains `part` (a click that submits a form
    /// returns before the next page has loaded).
    #[track_caller]
    pub fn wait_url(&self, part: &str) {
        self.wait_until(part, |url| url.contains(part));
    }

    /// Wait until the address is one `done` accepts.
    #[track_caller]
    pub fn wait_until(&self, part: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(&self.url()) {
            assert!(
                Instant::now() < deadline,
                "never reached {part}: at {}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn title(&self) -> String {
        self.cmd("GET", "/title", Value::Null)
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Every element matching a CSS selector.
    pub fn all(&self, css: &str) -> Vec<Element<'_>> {
        self.cmd(
            "POST",
            "/elements",
            json!({ "using": "css selector", "value": css }),
        )
        .as_array()
        .unwrap()
        .iter()
        .map(|e| Element {
            browser: self,
            id: e[ELEMENT].as_str().unwrap().to_string(),
        })
        .collect()
    }

    /// The one element matching a CSS selector.
    #[track_caller]
    pub fn one(&self, css: &str) -> Element<'_> {
        let mut all = self.all(css);
        assert_eq!(
            all.len(),
            1,
            "{css} on {}: {}",
            self.url(),
            self.text("body")
        );
        all.pop().unwrap()
    }

    /// The link whose text is exactly `text`.
    #[track_caller]
    pub fn link(&self, text: &str) -> Element<'_> {
        let v = self.cmd(
            "POST",
            "/element",
            json!({ "using": "link text", "value": text }),
        );
        Element {
            browser: self,
            id: v[ELEMENT].as_str().unwrap().to_string(),
        }
    }

    /// The visible text of the first element matching `css`.
    pub fn text(&self, css: &str) -> String {
        self.all(css).first().map(|e| e.text()).unwrap_or_default()
    }

    /// Run a script in the page and return its result.
    pub fn script(&self, js: &str) -> Value {
        self.cmd("POST", "/execute/sync", json!({ "script": js, "args": [] }))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .agent
                .delete(&format!("{}/session/{}", self.base, self.session))
                .call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Element<'_> {
    pub fn click(&self) {
        self.browser
            .cmd("POST", &format!("/element/{}/click", self.id), json!({}));
    }

    pub fn type_text(&self, text: &str) {
        self.browser.cmd(
            "POST",
            &format!("/element/{}/value", self.id),
            json!({ "text": text }),
        );
    }

    pub fn text(&self) -> String {
        self.browser
            .cmd("GET", &format!("/element/{}/text", self.id), Value::Null)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub fn attribute(&self, name: &str) -> Option<String> {
        self.browser
            .cmd(
                "GET",
                &format!("/element/{}/property/{name}", self.id),
                Value::Null,
            )
            .as_str()
            .map(str::to_string)
    }
}
