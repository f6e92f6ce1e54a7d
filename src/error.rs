//! The one error type of the library.
//!
//! A user of tradeql sees every error as a message that says what is wrong and
//! where: the file, the line, the column and the value at fault, and a hint when
//! there is an obvious fix. Internal failures (a polars error we did not expect,
//! an I/O failure) are a different kind, so the CLI can tell the two apart.
//! Errors are built in the library and rendered once, by the CLI.

use std::fmt;
use std::path::{Path, PathBuf};

/// What kind of failure this is; decides the exit code and how it is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input data is wrong: bad number, bad period, duplicate key, ...
    Input,
    /// A mapping file (TOML) is wrong or names a column the source lacks.
    Mapping,
    /// The store is missing, damaged, or was written by another format version.
    Store,
    /// Another process holds the store's lock.
    Locked,
    /// A query file is wrong: syntax, names, types.
    Query,
    /// The command line asks for something impossible.
    Usage,
    /// Reading or writing a file failed.
    Io,
    /// A file or store the command names does not exist.
    NotFound,
    /// A failure inside tradeql or polars that the user did not cause.
    Internal,
}

/// Where in a source file an error was found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    pub file: Option<PathBuf>,
    /// 1-based line in a CSV file (the header is line 1), or 1-based row in a Parquet file.
    pub line: Option<u64>,
    pub column: Option<String>,
    pub value: Option<String>,
    /// For query errors: the source line and the marked span.
    pub snippet: Option<Snippet>,
}

/// A source line with a marked span, shown under a query error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snippet {
    /// 1-based column (in characters) where the span starts.
    pub col: usize,
    /// Characters marked.
    pub width: usize,
    pub text: String,
}

impl Snippet {
    /// The line as shown: a long line is cut to [`SHOWN_CHARS`] characters
    /// around the marked span, with `…` where it was cut; with the marked
    /// column and width in what is shown.
    pub fn window(&self) -> (String, usize, usize) {
        let chars: Vec<char> = self.text.chars().collect();
        if chars.len() <= SHOWN_CHARS {
            return (self.text.clone(), self.col.max(1), self.width.max(1));
        }
        let start = self.col.saturating_sub(1).min(chars.len());
        let from = start.saturating_sub(SHOWN_CHARS / 3);
        let to = (from + SHOWN_CHARS).min(chars.len());
        let mut text = String::new();
        let mut col = start - from + 1;
        if from > 0 {
            text.push('…');
            col += 1;
        }
        text.extend(&chars[from..to]);
        if to < chars.len() {
            text.push('…');
        }
        (text, col, self.width.clamp(1, (to - start).max(1)))
    }
}

/// A tradeql error: a kind, a lowercase message, where, and hints.
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    /// Boxed: errors travel through every `Result`, and most have no location.
    pub location: Box<Location>,
    pub hints: Vec<String>,
    /// Further errors of the same run (for example more bad rows), already rendered.
    pub more: Vec<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A command line that asks for something impossible (as clap's own errors).
pub const EXIT_USAGE: u8 = 2;
/// Bad data, a bad mapping or query, a damaged store (EX_DATAERR).
pub const EXIT_DATA: u8 = 65;
/// A named file or store does not exist (EX_NOINPUT).
pub const EXIT_NO_INPUT: u8 = 66;
/// A failure inside tradeql (EX_SOFTWARE).
pub const EXIT_INTERNAL: u8 = 70;
/// Reading or writing failed: a full disk, a permission (EX_IOERR).
pub const EXIT_IO: u8 = 74;
/// Another writer holds the store: try again later (EX_TEMPFAIL).
pub const EXIT_BUSY: u8 = 75;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), location: Box::default(), hints: Vec::new(), more: Vec::new() }
    }

    pub fn input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Input, message)
    }

    pub fn mapping(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Mapping, message)
    }

    pub fn store(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Store, message)
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Usage, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// An I/O failure on `path`, with what we were doing.
    pub fn io(doing: &str, path: &Path, err: std::io::Error) -> Self {
        let kind = if err.kind() == std::io::ErrorKind::NotFound { ErrorKind::NotFound } else { ErrorKind::Io };
        Self::new(kind, format!("{doing} {}: {err}", path.display())).in_file(path)
    }

    pub fn in_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.location.file = Some(file.into());
        self
    }

    pub fn at_line(mut self, line: u64) -> Self {
        self.location.line = Some(line);
        self
    }

    pub fn in_column(mut self, column: impl Into<String>) -> Self {
        self.location.column = Some(column.into());
        self
    }

    /// The value at fault; a long one is shown by its start and its length.
    pub fn with_value(mut self, value: impl Into<String>) -> Self {
        self.location.value = Some(shown(&value.into()));
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    /// The exit code the CLI uses for this error.
    /// The process exit status for this error, after sysexits(3), so that a
    /// scheduler can tell what to do: fix the command (2), fix the data or the
    /// query (65), look for the missing file (66), retry later (75: another
    /// writer holds the store), check the disk (74), report a bug (70).
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            ErrorKind::Usage => EXIT_USAGE,
            ErrorKind::Input | ErrorKind::Mapping | ErrorKind::Query | ErrorKind::Store => EXIT_DATA,
            ErrorKind::NotFound => EXIT_NO_INPUT,
            ErrorKind::Locked => EXIT_BUSY,
            ErrorKind::Io => EXIT_IO,
            ErrorKind::Internal => EXIT_INTERNAL,
        }
    }

    /// The `file:line: column "c":` prefix, or nothing if the error has no place.
    fn place(&self) -> String {
        let loc = &self.location;
        let mut out = String::new();
        if let Some(file) = &loc.file {
            out.push_str(&file.display().to_string());
            if let Some(line) = loc.line {
                out.push_str(&format!(":{line}"));
                if let Some(snippet) = &loc.snippet {
                    out.push_str(&format!(":{}", snippet.col));
                }
            }
            out.push_str(": ");
        } else if let Some(line) = loc.line {
            out.push_str(&format!("line {line}: "));
        }
        if let Some(column) = &loc.column {
            out.push_str(&format!("column `{column}`: "));
        }
        out
    }
}

/// The most characters of a value an error message echoes.
pub const SHOWN_CHARS: usize = 120;

/// `text` as an error message shows it: whole when short, else its first
/// [`SHOWN_CHARS`] characters and how long it is (a 10 MB value is not echoed).
pub fn shown(text: &str) -> String {
    match text.char_indices().nth(SHOWN_CHARS) {
        None => text.to_string(),
        Some((end, _)) => format!("{}… ({} bytes in all)", &text[..end], text.len()),
    }
}

/// A failure to write `path`: says so plainly when the disk is full, which
/// the Parquet writer otherwise reports as a transport error.
pub fn writing(path: &Path, err: impl fmt::Display) -> Error {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let full = free_bytes(dir).is_some_and(|free| free < 1 << 20);
    let text = err.to_string();
    let first = text.lines().next().unwrap_or_default();
    if full || text.contains("No space left") {
        Error::new(ErrorKind::Io, format!("cannot write {}: the disk is full", path.display()))
            .hint("free some space and run the command again; nothing was half-written")
    } else {
        Error::new(ErrorKind::Io, format!("cannot write {}: {first}", path.display()))
    }
}

/// Bytes free to an unprivileged writer on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Columns `text` takes on a terminal (CJK characters take two, combining marks none).
pub fn display_width(text: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(text)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.place(), self.message)?;
        if let Some(value) = &self.location.value {
            write!(f, " (value {value:?})")?;
        }
        if let (Some(snippet), Some(line)) = (&self.location.snippet, self.location.line) {
            let gutter = " ".repeat(line.to_string().len());
            let (text, col, width) = snippet.window();
            // The caret under the span by display width: a CJK character takes two columns.
            let shown: Vec<char> = text.chars().collect();
            let before: String = shown.iter().take(col - 1).collect();
            let span: String = shown.iter().skip(col - 1).take(width).collect();
            let (pad, marks) = (display_width(&before), display_width(&span).max(1));
            write!(f, "\n{gutter} |\n{line} | {text}\n{gutter} | {}{}", " ".repeat(pad), "^".repeat(marks))?;
        }
        for hint in &self.hints {
            write!(f, "\n  help: {hint}")?;
        }
        for more in &self.more {
            write!(f, "\n{more}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<polars::prelude::PolarsError> for Error {
    fn from(err: polars::prelude::PolarsError) -> Self {
        // Polars messages carry a long plan dump after the first line.
        let text = err.to_string();
        let first = text.lines().next().unwrap_or("polars error").to_string();
        Error::internal(format!("polars: {first}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::internal(format!("json: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_file_line_column_value_and_hint() {
        let e = Error::input("cannot parse as a number")
            .in_file("data/x.csv")
            .at_line(17)
            .in_column("value")
            .with_value("33,312")
            .hint("declare the separator with thousands = \",\" in the mapping");
        assert_eq!(
            e.to_string(),
            "data/x.csv:17: column `value`: cannot parse as a number (value \"33,312\")\n  \
             help: declare the separator with thousands = \",\" in the mapping"
        );
    }

    #[test]
    fn the_caret_is_under_the_span_after_chinese_text() {
        let text = "from gacc\nwhere name(partner) = \"中国\" and partnr = \"USA\"\n";
        let start = text.find("partnr").unwrap();
        let d = crate::lang::diag::Diag::new(crate::lang::diag::Span::new(start, start + 6), "unknown column");
        let shown = d.into_error(Path::new("q.tql"), text).to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines[0], "q.tql:2:32: unknown column");
        let (source, marks) = (lines[2], lines[3]);
        let caret = marks.find('^').unwrap();
        // The caret starts at the terminal column where `partnr` starts (each
        // Chinese character takes two columns), and marks its six letters.
        let at = source.find("partnr").unwrap();
        assert_eq!(caret, display_width(&source[..at]), "{shown}");
        assert_eq!(caret, at - 2, "two characters of three bytes and two columns each: {shown}");
        assert_eq!(marks[caret..].trim_end(), "^^^^^^", "{shown}");
    }

    #[test]
    fn internal_errors_exit_differently() {
        assert_eq!(Error::internal("x").exit_code(), 70);
        assert_eq!(Error::input("x").exit_code(), 65);
        assert_eq!(Error::usage("x").exit_code(), 2);
        assert_eq!(Error::new(ErrorKind::Locked, "x").exit_code(), 75);
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(Error::io("cannot read", Path::new("x.csv"), missing).exit_code(), 66);
    }
}
