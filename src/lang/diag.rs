//! Diagnostics of the query language: a span in the query text, a message and
//! hints. Turned into a [`crate::Error`] carrying file, line, column and the
//! source line, which the CLI renders with the span marked:
//!
//! ```text
//! error: queries/x.tql:3:7: unknown column `partnr`
//!   |
//! 3 | where partnr = "USA"
//!   |       ^^^^^^
//!   help: did you mean `partner`?
//! ```

use crate::error::{Error, ErrorKind, Snippet};
use std::path::Path;

/// Byte range in the query text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span { start: self.start.min(other.start), end: self.end.max(other.end) }
    }
}

/// A problem in a query, at a span.
#[derive(Debug, Clone, PartialEq)]
pub struct Diag {
    pub span: Span,
    pub message: String,
    pub hints: Vec<String>,
}

impl Diag {
    pub fn new(span: Span, message: impl Into<String>) -> Diag {
        Diag { span, message: message.into(), hints: Vec::new() }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Diag {
        self.hints.push(hint.into());
        self
    }

    /// The user-facing error: file, line, column, the source line with the span marked.
    pub fn into_error(self, file: &Path, text: &str) -> Error {
        let start = self.span.start.min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line_no = text[..start].matches('\n').count() as u64 + 1;
        let col = text[line_start..start].chars().count() + 1;
        let end = self.span.end.clamp(start, line_end);
        let width = text[start..end].chars().count().max(1);
        let mut e = Error::new(ErrorKind::Query, self.message).in_file(file).at_line(line_no);
        e.location.snippet = Some(Snippet { col, width, text: text[line_start..line_end].to_string() });
        e.hints = self.hints;
        e
    }
}

/// The most errors of one query shown in one run.
pub const ERRORS_SHOWN: usize = 10;

/// Several problems of one query as one error: the first, then each further
/// one rendered in full (file, line, marked line, hints), up to [`ERRORS_SHOWN`].
pub fn into_error_all(all: Vec<Diag>, file: &Path, text: &str) -> Error {
    let count = all.len();
    let mut errors = all.into_iter().map(|d| d.into_error(file, text));
    let mut first = errors.next().unwrap_or_else(|| Error::internal("a query error without a diagnostic"));
    for e in errors.by_ref().take(ERRORS_SHOWN - 1) {
        first.more.push(format!("error: {e}"));
    }
    if count > ERRORS_SHOWN {
        first.more.push(format!("... and {} more errors in this query", count - ERRORS_SHOWN));
    }
    first
}
