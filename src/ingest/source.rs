//! Reading a source file in blocks, converted in parallel, delivered in order.
//!
//! A CSV file is cut into blocks of whole records (the cut is quote-aware, so a
//! newline inside a quoted field never splits a record) by one reader thread;
//! worker threads parse and convert blocks; the caller receives the converted
//! blocks in file order. At most a fixed number of blocks is in flight, so
//! memory stays bounded whatever the file's size. Parquet sources are read in
//! row slices through the same path, and so are the sheets of a workbook
//! (.xlsx, .xls, .xlsb, .ods, read with calamine), each cell as its text.

use super::convert::{Batch, Layout, Record, RowError};
use crate::error::{Error, Result};
use polars::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

/// Bytes per CSV block handed to a worker.
const BLOCK_BYTES: usize = 8 << 20;
/// Rows per Parquet slice handed to a worker.
const SLICE_ROWS: usize = 65_536;

/// The kind of a source file, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Parquet,
    Workbook,
}

impl Format {
    pub fn of(path: &Path) -> Result<Format> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("csv" | "txt" | "tsv") => Ok(Format::Csv),
            Some("parquet" | "pq") => Ok(Format::Parquet),
            Some("xlsx" | "xlsm" | "xlsb" | "xls" | "ods") => Ok(Format::Workbook),
            _ => Err(Error::usage(format!(
                "cannot tell the format of {}: expected a .csv, .parquet or workbook (.xlsx, .xls, .xlsb, .ods) file",
                path.display()
            ))),
        }
    }
}

/// An opened source: its header and where its records start.
pub struct Source {
    pub path: PathBuf,
    /// The name errors give: the path, or `book.xlsx:Sheet1` for a sheet.
    pub name: PathBuf,
    /// Added to a frame row's number to make its line: the sheet row of the header.
    line_offset: u64,
    pub format: Format,
    pub header: Vec<String>,
    pub bytes: u64,
    delimiter: u8,
    /// CSV: byte offset and line of the first record after the header.
    data_start: (u64, u64),
    /// Parquet: the lazy scan and its row count.
    parquet: Option<(LazyFrame, usize)>,
}

/// How a workbook is read: which sheet (`*`: every sheet, the sheet's name
/// as the column `sheet`), and the sheet row of the header (default: the
/// first row that holds anything).
#[derive(Debug, Clone, Default)]
pub struct SheetChoice {
    pub sheet: Option<String>,
    pub header_row: Option<u32>,
}

/// Opens `path` as one source, or a workbook as one source per sheet read.
pub fn open_all(path: &Path, delimiter: u8, sheets: &SheetChoice) -> Result<Vec<Source>> {
    match Format::of(path)? {
        Format::Workbook => open_workbook(path, sheets),
        _ => Ok(vec![Source::open(path, delimiter)?]),
    }
}

fn open_workbook(path: &Path, choice: &SheetChoice) -> Result<Vec<Source>> {
    use calamine::Reader;
    let bytes = std::fs::metadata(path).map_err(|e| Error::io("cannot read", path, e))?.len();
    let mut book = calamine::open_workbook_auto(path)
        .map_err(|e| Error::input(format!("cannot read as a workbook: {e}")).in_file(path))?;
    let names = book.sheet_names();
    let every = choice.sheet.as_deref() == Some("*");
    let chosen: Vec<String> = match choice.sheet.as_deref() {
        Some("*") => names.clone(),
        Some(s) if names.iter().any(|n| n == s) => vec![s.to_string()],
        Some(s) => {
            let mut e = Error::mapping(format!("the workbook has no sheet {s:?}; its sheets: {}", names.join(", ")))
                .in_file(path);
            if let Some(c) = crate::suggest::closest(s, names.iter().map(String::as_str)) {
                e = e.hint(format!("did you mean sheet = \"{c}\"?"));
            }
            return Err(e);
        }
        None => names.first().cloned().into_iter().collect(),
    };
    if chosen.is_empty() {
        return Err(Error::input("the workbook has no sheets").in_file(path));
    }
    let mut out = Vec::new();
    for sheet in chosen {
        let name = PathBuf::from(format!("{}:{sheet}", path.display()));
        let range = book
            .worksheet_range(&sheet)
            .map_err(|e| Error::input(format!("cannot read the sheet: {e}")).in_file(&name))?;
        let Some((first_row, first_col)) = range.start() else {
            if every {
                continue; // an empty sheet of a workbook read whole
            }
            return Err(Error::input("the sheet is empty: no header and no rows").in_file(&name));
        };
        let rows: Vec<&[calamine::Data]> = range.rows().collect();
        // Sheet rows are 1-based; the range starts at its first used cell.
        let header_at = match choice.header_row {
            Some(r) if r as u64 > first_row as u64 && ((r - 1 - first_row) as usize) < rows.len() => {
                (r - 1 - first_row) as usize
            }
            Some(r) if (r as u64) <= first_row as u64 => {
                return Err(Error::mapping(format!(
                    "header_row = {r}, but the sheet's first used row is {}",
                    first_row + 1
                ))
                .in_file(&name));
            }
            Some(r) => {
                return Err(Error::mapping(format!("header_row = {r} is past the sheet's last row")).in_file(&name));
            }
            None => 0,
        };
        let header_line = first_row as u64 + header_at as u64 + 1;
        let mut header: Vec<String> = rows[header_at].iter().map(cell_text).map(|h| h.trim().to_string()).collect();
        while header.last().is_some_and(String::is_empty) {
            header.pop();
        }
        if let Some(i) = header.iter().position(String::is_empty) {
            return Err(Error::input(format!(
                "the header has an empty cell in column {}",
                column_letters(first_col as usize + i)
            ))
            .in_file(&name)
            .at_line(header_line)
            .hint("name every column of the header row (or set header_row in the mapping)"));
        }
        if every {
            if header.iter().any(|h| h == "sheet") {
                return Err(Error::input(
                    "the sheet has a column `sheet`, the name a workbook read whole gives the sheet's name",
                )
                .in_file(&name)
                .at_line(header_line));
            }
            header.push("sheet".into());
        }
        check_header(&header, &name)?;
        let data = &rows[header_at + 1..];
        if data.is_empty() {
            if every {
                continue;
            }
            return Err(Error::input("the sheet has a header but no rows").in_file(&name));
        }
        let width = header.len() - usize::from(every);
        for (i, row) in data.iter().enumerate() {
            if let Some(j) = row.iter().skip(width).position(|c| !matches!(c, calamine::Data::Empty)) {
                return Err(Error::input(format!(
                    "a value in column {}, which has no header",
                    column_letters(first_col as usize + width + j)
                ))
                .in_file(&name)
                .at_line(header_line + 1 + i as u64)
                .with_value(cell_text(&row[width + j]))
                .hint("name the column in the header row, or delete the stray cell"));
            }
        }
        let mut columns: Vec<Vec<String>> = vec![Vec::with_capacity(data.len()); header.len()];
        for row in data {
            for (i, column) in columns.iter_mut().take(width).enumerate() {
                column.push(row.get(i).map(cell_text).unwrap_or_default());
            }
            if every {
                columns[width].push(sheet.clone());
            }
        }
        let frame = DataFrame::new(
            data.len(),
            header.iter().zip(columns).map(|(h, c)| Column::new(h.as_str().into(), c)).collect(),
        )?;
        let rows_n = frame.height();
        out.push(Source {
            path: path.to_path_buf(),
            name,
            line_offset: header_line,
            format: Format::Workbook,
            header,
            bytes,
            delimiter: b',',
            data_start: (0, 0),
            parquet: Some((frame.lazy(), rows_n)),
        });
    }
    if out.is_empty() {
        return Err(Error::input("no sheet of the workbook holds a header and rows").in_file(path));
    }
    Ok(out)
}

/// A cell as the text a CSV file would hold: whole numbers without a
/// fraction, dates as 2024-01-31, errors as their Excel code (#N/A).
fn cell_text(cell: &calamine::Data) -> String {
    use calamine::Data;
    match cell {
        Data::Empty => String::new(),
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.0}"),
        Data::Float(f) => f.to_string(),
        Data::Bool(b) => b.to_string(),
        Data::DateTime(d) => {
            let (y, m, day, h, min, s, _) = d.to_ymd_hms_milli();
            if (h, min, s) == (0, 0, 0) {
                format!("{y:04}-{m:02}-{day:02}")
            } else {
                format!("{y:04}-{m:02}-{day:02}T{h:02}:{min:02}:{s:02}")
            }
        }
        Data::Error(e) => e.to_string(),
    }
}

/// The letters of a 0-based column index: 0 -> A, 27 -> AB.
fn column_letters(mut i: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'A' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

impl Source {
    /// A source that is a whole file, named by its path.
    fn of_file(
        path: &Path,
        format: Format,
        header: Vec<String>,
        bytes: u64,
        delimiter: u8,
        data_start: (u64, u64),
        parquet: Option<(LazyFrame, usize)>,
    ) -> Source {
        let (path, name) = (path.to_path_buf(), path.to_path_buf());
        Source { path, name, line_offset: 0, format, header, bytes, delimiter, data_start, parquet }
    }

    /// Opens `path` and reads its header; an empty file is an error.
    pub fn open(path: &Path, delimiter: u8) -> Result<Source> {
        let format = Format::of(path)?;
        let bytes = std::fs::metadata(path).map_err(|e| Error::io("cannot read", path, e))?.len();
        match format {
            Format::Csv => {
                let mut rdr = csv::ReaderBuilder::new()
                    .delimiter(delimiter)
                    .has_headers(false)
                    .flexible(true)
                    .from_path(path)
                    .map_err(|e| Error::input(format!("cannot read: {e}")).in_file(path))?;
                let mut rec = csv::StringRecord::new();
                let got = rdr
                    .read_record(&mut rec)
                    .map_err(|e| Error::input(format!("cannot read the header: {e}")).in_file(path).at_line(1))?;
                if !got || rec.iter().all(|f| f.trim().is_empty()) {
                    return Err(Error::input("the file is empty: no header and no rows").in_file(path));
                }
                let header: Vec<String> = rec
                    .iter()
                    .enumerate()
                    .map(|(i, h)| {
                        let h = if i == 0 { h.trim_start_matches('\u{feff}') } else { h };
                        h.trim().to_string()
                    })
                    .collect();
                let pos = rdr.position();
                // The line of the first record, by counting the newlines before
                // it: the reader's own count is one short after a CRLF header.
                let mut head = vec![0u8; pos.byte() as usize];
                File::open(path)
                    .and_then(|mut f| f.read_exact(&mut head))
                    .map_err(|e| Error::io("cannot read", path, e))?;
                let data_start = (pos.byte(), 1 + memchr::memchr_iter(b'\n', &head).count() as u64);
                if data_start.0 >= bytes {
                    return Err(Error::input("the file has a header but no rows").in_file(path));
                }
                check_header(&header, path)?;
                Ok(Source::of_file(path, format, header, bytes, delimiter, data_start, None))
            }
            Format::Workbook => Err(Error::internal("a workbook is opened by open_all")),
            Format::Parquet => {
                let mut lf = LazyFrame::scan_parquet(
                    PlRefPath::new(path.to_string_lossy().as_ref()),
                    ScanArgsParquet::default(),
                )
                .map_err(|e| Error::input(format!("cannot read as Parquet: {e}")).in_file(path))?;
                let schema = lf
                    .collect_schema()
                    .map_err(|e| Error::input(format!("cannot read as Parquet: {}", first_line(&e))).in_file(path))?;
                let header: Vec<String> = schema.iter_names().map(|n| n.to_string()).collect();
                let rows = lf.clone().select([len()]).collect()?.column("len")?.u32()?.get(0).unwrap_or(0) as usize;
                if rows == 0 {
                    return Err(Error::input("the file is empty: no rows").in_file(path));
                }
                check_header(&header, path)?;
                Ok(Source::of_file(path, format, header, bytes, delimiter, (0, 0), Some((lf, rows))))
            }
        }
    }
}

fn first_line(e: &PolarsError) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

fn check_header(header: &[String], path: &Path) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for h in header {
        if !seen.insert(h.as_str()) {
            return Err(Error::input(format!("the header names column `{h}` twice")).in_file(path).at_line(1));
        }
    }
    Ok(())
}

/// Work for one worker.
enum Block {
    Csv { bytes: Vec<u8>, first_line: u64 },
    Frame { frame: DataFrame, first_row: u64 },
}

/// One converted block, delivered in file order.
pub struct Converted {
    pub batch: Batch,
    pub errors: Vec<RowError>,
    /// Source records read (rows of the file, not rows produced).
    pub records: u64,
}

/// Reads `source` with `workers` converting threads and hands each converted
/// block, in order, to `deliver`; stops early when `deliver` returns false.
/// `progress` is told how many source bytes were read.
pub fn convert_all(
    source: &Source,
    layout: &Layout,
    workers: usize,
    progress: &(dyn Fn(u64) + Sync),
    deliver: &mut dyn FnMut(Converted) -> Result<bool>,
) -> Result<String> {
    let workers = workers.max(1);
    let in_flight = workers * 3 + 2;
    std::thread::scope(|scope| -> Result<String> {
        let (block_tx, block_rx) = sync_channel::<(u64, Block)>(workers);
        let (result_tx, result_rx) = sync_channel::<(u64, Result<Converted>)>(in_flight);
        let (ticket_tx, ticket_rx) = sync_channel::<()>(in_flight);
        for _ in 0..in_flight {
            ticket_tx.send(()).expect("ticket channel has room");
        }
        let reader = scope.spawn(move || read_blocks(source, block_tx, ticket_rx, progress));
        let block_rx = Arc::new(Mutex::new(block_rx));
        for _ in 0..workers {
            let block_rx = Arc::clone(&block_rx);
            let result_tx = result_tx.clone();
            scope.spawn(move || {
                loop {
                    let next = block_rx.lock().expect("block queue").recv();
                    let Ok((seq, block)) = next else { break };
                    let out = convert_block(source, layout, block);
                    if result_tx.send((seq, out)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(result_tx);
        let outcome = deliver_in_order(result_rx, ticket_tx, deliver);
        // Dropping the receivers above (inside deliver_in_order) stops the
        // workers and the reader if we stopped early.
        let read = reader.join().map_err(|_| Error::internal("the reader thread panicked"))?;
        outcome?;
        read
    })
}

fn deliver_in_order(
    results: Receiver<(u64, Result<Converted>)>,
    tickets: SyncSender<()>,
    deliver: &mut dyn FnMut(Converted) -> Result<bool>,
) -> Result<()> {
    let mut pending: BTreeMap<u64, Result<Converted>> = BTreeMap::new();
    let mut next = 0u64;
    for (seq, out) in results.iter() {
        pending.insert(seq, out);
        while let Some(out) = pending.remove(&next) {
            next += 1;
            if !deliver(out?)? {
                return Ok(());
            }
            let _ = tickets.send(());
        }
    }
    Ok(())
}

/// Feeds blocks to the workers; returns the SHA-256 of the whole file (hashed
/// as it is read, so a large file is read once).
fn read_blocks(
    source: &Source,
    blocks: SyncSender<(u64, Block)>,
    tickets: Receiver<()>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<String> {
    let mut seq = 0u64;
    let mut send = |block: Block| -> bool {
        if tickets.recv().is_err() {
            return false;
        }
        let ok = blocks.send((seq, block)).is_ok();
        seq += 1;
        ok
    };
    if let Some((lf, rows)) = &source.parquet {
        let (sha256, _) = crate::store::sha256_file(&source.path)?;
        let mut offset = 0usize;
        while offset < *rows {
            let n = SLICE_ROWS.min(rows - offset);
            let frame = lf.clone().slice(offset as i64, n as IdxSize).collect()?;
            progress((source.bytes as u128 * n as u128 / *rows as u128) as u64);
            if !send(Block::Frame { frame, first_row: offset as u64 + 1 }) {
                return Ok(sha256);
            }
            offset += n;
        }
        return Ok(sha256);
    }
    let path = &source.path;
    let mut file = File::open(path).map_err(|e| Error::io("cannot read", path, e))?;
    let (start, mut line) = source.data_start;
    let mut hasher = Sha256::new();
    let mut header = vec![0u8; start as usize];
    file.read_exact(&mut header).map_err(|e| Error::io("cannot read", path, e))?;
    hasher.update(&header);
    let mut buf: Vec<u8> = Vec::with_capacity(BLOCK_BYTES * 2);
    let mut scanned = 0usize;
    let mut in_quotes = false;
    let mut cut = 0usize;
    let mut eof = false;
    while !eof {
        let old = buf.len();
        buf.resize(old + BLOCK_BYTES, 0);
        let n = read_full(&mut file, &mut buf[old..]).map_err(|e| Error::io("cannot read", path, e))?;
        buf.truncate(old + n);
        hasher.update(&buf[old..]);
        eof = n == 0;
        progress(n as u64);
        for pos in memchr::memchr2_iter(b'"', b'\n', &buf[scanned..]) {
            let pos = scanned + pos;
            if buf[pos] == b'"' {
                in_quotes = !in_quotes;
            } else if !in_quotes {
                cut = pos + 1;
            }
        }
        scanned = buf.len();
        if eof && cut < buf.len() {
            cut = buf.len(); // a last record without a final newline
        }
        if cut == 0 {
            continue; // one record longer than a block: read more
        }
        let rest = buf.split_off(cut);
        let bytes = std::mem::replace(&mut buf, rest);
        let lines = memchr::memchr_iter(b'\n', &bytes).count() as u64;
        scanned -= cut;
        cut = 0;
        let first_line = line;
        line += lines;
        if !send(Block::Csv { bytes, first_line }) {
            break;
        }
        buf.reserve(BLOCK_BYTES);
    }
    Ok(crate::store::hex(&hasher.finalize()))
}

fn read_full(file: &mut File, mut buf: &mut [u8]) -> std::io::Result<usize> {
    let mut total = 0;
    while !buf.is_empty() {
        match file.read(buf)? {
            0 => break,
            n => {
                total += n;
                buf = &mut buf[n..];
            }
        }
    }
    Ok(total)
}

struct CsvRecord<'a>(&'a csv::StringRecord);

impl Record for CsvRecord<'_> {
    fn field(&self, index: usize) -> Option<&str> {
        self.0.get(index)
    }
    fn field_count(&self) -> usize {
        self.0.len()
    }
}

struct FrameRecord<'a> {
    columns: &'a [StringChunked],
    row: usize,
}

impl Record for FrameRecord<'_> {
    fn field(&self, index: usize) -> Option<&str> {
        self.columns.get(index).map(|c| c.get(self.row).unwrap_or(""))
    }
    fn field_count(&self) -> usize {
        self.columns.len()
    }
}

/// The line of a record that starts at a byte offset of a block, counted
/// from the newlines before it (records come in order, so each byte is
/// counted once). A record's offset may point at the line end before it
/// (CRLF, blank lines): those newlines are passed first.
struct LineCounter<'a> {
    bytes: &'a [u8],
    at: usize,
    line: u64,
}

impl LineCounter<'_> {
    fn line_of(&mut self, start: usize) -> u64 {
        let mut start = start.min(self.bytes.len()).max(self.at);
        while start < self.bytes.len() && matches!(self.bytes[start], b'\r' | b'\n') {
            start += 1;
        }
        self.line += memchr::memchr_iter(b'\n', &self.bytes[self.at..start]).count() as u64;
        self.at = start;
        self.line
    }
}

fn convert_block(source: &Source, layout: &Layout, block: Block) -> Result<Converted> {
    let mut errors = Vec::new();
    let mut records = 0u64;
    let batch = match block {
        Block::Csv { bytes, first_line } => {
            let mut batch = Batch::new(bytes.len() / 48 + 16, layout.measure_names().len());
            let mut rdr = csv::ReaderBuilder::new()
                .delimiter(source.delimiter)
                .has_headers(false)
                .flexible(true)
                .from_reader(&bytes[..]);
            let mut rec = csv::StringRecord::new();
            let mut lines = LineCounter { bytes: &bytes, at: 0, line: first_line };
            loop {
                match rdr.read_record(&mut rec) {
                    Ok(false) => break,
                    Ok(true) => {
                        records += 1;
                        let line = lines.line_of(rec.position().map_or(0, |p| p.byte() as usize));
                        if let Err(e) = layout.convert(&CsvRecord(&rec), line, &mut batch) {
                            errors.push(*e);
                        }
                    }
                    Err(e) => {
                        records += 1;
                        let line = lines.line_of(e.position().map_or(0, |p| p.byte() as usize));
                        errors.push(RowError {
                            line,
                            column: String::new(),
                            value: String::new(),
                            reason: match e.kind() {
                                csv::ErrorKind::Utf8 { .. } => "the row is not valid UTF-8".to_string(),
                                _ => format!("cannot read the row: {e}"),
                            },
                            hint: None,
                            record: String::new(),
                        });
                    }
                }
            }
            batch
        }
        Block::Frame { frame, first_row } => {
            let mut batch = Batch::new(frame.height(), layout.measure_names().len());
            let columns: Vec<StringChunked> = frame
                .columns()
                .iter()
                .map(|c| Ok(c.cast(&DataType::String)?.str()?.clone()))
                .collect::<PolarsResult<_>>()?;
            for row in 0..frame.height() {
                records += 1;
                let rec = FrameRecord { columns: &columns, row };
                if let Err(e) = layout.convert(&rec, source.line_offset + first_row + row as u64, &mut batch) {
                    errors.push(*e);
                }
            }
            batch
        }
    };
    Ok(Converted { batch, errors, records })
}
