//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`, openraft at `warn`), as text or JSON.
//! Every line of a node carries its node id: text lines begin with `node=<id>`, JSON
//! objects have a `"node_id"` field. The formatter adds it, so no spawned task can forget.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The two log formats of `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Wraps a formatter and puts the node id on every line.
struct WithNodeId<F> {
    node_id: Option<i32>,
    format: LogFormat,
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for WithNodeId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let Some(id) = self.node_id else {
            return self.inner.format_event(ctx, writer, event);
        };
        match self.format {
            LogFormat::Text => {
                write!(writer, "node={id} ")?;
                self.inner.format_event(ctx, writer, event)
            }
            LogFormat::Json => {
                let mut line = String::new();
                self.inner.format_event(ctx, Writer::new(&mut line), event)?;
                match line.strip_prefix('{') {
                    Some(rest) => write!(writer, "{{\"node_id\":{id},{rest}"),
                    None => writer.write_str(&line),
                }
            }
        }
    }
}

/// Installs the global subscriber. `node_id` is `None` for the command-line tools.
pub fn init(format: LogFormat, node_id: Option<i32>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => {
            builder.event_format(WithNodeId { node_id, format, inner: tracing_subscriber::fmt::format() }).try_init()
        }
        LogFormat::Json => builder
            .json()
            .event_format(WithNodeId { node_id, format, inner: tracing_subscriber::fmt::format().json() })
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging was already initialised: {e}");
    }
}
