//! Logging set-up from the `log` section: level, text or JSON lines, and
//! `log.fields` added to every line.

use std::io::{self, IsTerminal, Write};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Install the global subscriber. `RUST_LOG` overrides `log.level`.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!(
            // The object-store client logs each retry at info; what we make
            // of a failure is logged by us, once.
            "{},hyper=warn,object_store=warn,reqwest=warn",
            config.level
        ))
    });
    let writer = FieldsWriter::new(config);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(config.formatter == LogFormat::Text && io::stderr().is_terminal())
        .with_writer(writer);
    let _ = match config.formatter {
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Writes each formatted event to stderr with the static `log.fields`
/// spliced in. The formatter hands over one whole line per write, so a
/// line can be amended without parsing it.
#[derive(Clone)]
struct FieldsWriter {
    format: LogFormat,
    /// `"k":"v",` pairs for JSON, ` k=v` pairs for text.
    extra: String,
}

impl FieldsWriter {
    fn new(config: &LogConfig) -> FieldsWriter {
        let extra = match config.formatter {
            LogFormat::Json => config
                .fields
                .iter()
                .map(|(k, v)| format!("{}:{},", json_str(k), json_str(v)))
                .collect(),
            LogFormat::Text => config
                .fields
                .iter()
                .map(|(k, v)| {
                    if v.contains(' ') || v.is_empty() {
                        format!(" {k}={}", json_str(v))
                    } else {
                        format!(" {k}={v}")
                    }
                })
                .collect(),
        };
        FieldsWriter {
            format: config.formatter,
            extra,
        }
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

impl<'a> MakeWriter<'a> for FieldsWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { fields: self }
    }
}

struct LineWriter<'a> {
    fields: &'a FieldsWriter,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut err = io::stderr().lock();
        if self.fields.extra.is_empty() {
            err.write_all(buf)?;
            return Ok(buf.len());
        }
        let (body, newline) = match buf.strip_suffix(b"\n") {
            Some(b) => (b, true),
            None => (buf, false),
        };
        match self.fields.format {
            LogFormat::Json if body.first() == Some(&b'{') => {
                err.write_all(b"{")?;
                err.write_all(self.fields.extra.as_bytes())?;
                err.write_all(&body[1..])?;
            }
            _ => {
                err.write_all(body)?;
                err.write_all(self.fields.extra.as_bytes())?;
            }
        }
        if newline {
            err.write_all(b"\n")?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}
