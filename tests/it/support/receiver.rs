//! An HTTP endpoint that receives notifications, as a pipeline's webhook
//! does: hyper on 127.0.0.1, recording every POST, and refusing the first
//! ones when told to (an endpoint that is down for a while).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};

pub struct Received {
    pub headers: HeaderMap,
    pub body: serde_json::Value,
}

pub struct Receiver {
    /// `http://127.0.0.1:PORT/events`
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    /// POSTs answered 500.
    pub refused: Arc<AtomicUsize>,
}

impl Receiver {
    /// Answer the first `refuse` POSTs with 500, the rest with 200.
    pub fn start(refuse: usize) -> Receiver {
        Receiver::start_refusing(refuse, StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Answer the first `refuse` POSTs with `status`, the rest with 200.
    pub fn start_refusing(refuse: usize, status: StatusCode) -> Receiver {
        let refusal = status;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicUsize::new(0));
        let (rec, refd) = (received.clone(), refused.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (rec, refd) = (rec.clone(), refd.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let (rec, refd) = (rec.clone(), refd.clone());
                            async move {
                                let (parts, body) = req.into_parts();
                                let bytes = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let status = if refd.load(Ordering::SeqCst) < refuse {
                                    refd.fetch_add(1, Ordering::SeqCst);
                                    refusal
                                } else {
                                    rec.lock().unwrap().push(Received {
                                        headers: parts.headers,
                                        body: serde_json::from_slice(&bytes)
                                            .unwrap_or(serde_json::Value::Null),
                                    });
                                    StatusCode::OK
                                };
                                let mut resp = Response::new(Full::new(Bytes::new()));
                                *resp.status_mut() = status;
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        Receiver {
            url,
            received,
            refused,
        }
    }

    /// Every event received so far, in order.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| r.body["events"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Wait (at most 10 s) until `n` events have arrived; all of them.
    #[track_caller]
    pub fn wait_for(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let events = self.events();
            if events.len() >= n {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} events arrived: {events:#?}",
                events.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Header `name` of every POST received.
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                r.headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    }
}
