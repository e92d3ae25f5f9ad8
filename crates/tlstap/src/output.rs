//! Builds the sink the user asked for, writing to stdout or a file, buffered.

use std::io::{self, BufWriter, Write};
use std::path::Path;

use anyhow::{Context as _, Result};
use tlstap_core::secret_file::{open_secret_file, OpenMode};
use tlstap_core::sink::{JsonlSink, KeylogSink, PayloadStyle, Sink, TextSink};

use crate::cli::Format;

/// `-o FILE` is opened as secret files are (created 0600, someone else's symlink refused): the
/// plaintext of TLS connections holds passwords and tokens, and secret records go there too.
pub fn open_sink(format: Format, output: Option<&Path>) -> Result<Box<dyn Sink>> {
    let out: Box<dyn Write> = match output {
        Some(path) => Box::new(
            open_secret_file(path, OpenMode::Truncate).with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => Box::new(io::stdout().lock()),
    };
    let out = BufWriter::with_capacity(64 * 1024, out);
    Ok(match format {
        Format::Text => Box::new(TextSink::new(out, PayloadStyle::Auto)),
        Format::Hex => Box::new(TextSink::new(out, PayloadStyle::Hex)),
        Format::Jsonl => Box::new(JsonlSink::new(out)),
    })
}

/// The NSS key log file: created 0600 (appending keeps an existing file's mode), each line
/// written and flushed by itself.
pub fn open_keylog_sink(path: &Path) -> Result<Box<dyn Sink>> {
    let file =
        open_secret_file(path, OpenMode::Append).with_context(|| format!("cannot open key log {}", path.display()))?;
    Ok(Box::new(KeylogSink::new(file)))
}
