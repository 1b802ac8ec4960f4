//! Writing a trace file as records arrive (buffered; flushed at the end).

use std::{
    collections::HashSet,
    fs::File,
    io::{BufWriter, Write},
    path::Path,
};

use anyhow::{Context as _, Result};
use bytes::{BufMut as _, BytesMut};
use dio_trace_common::FORMAT_VERSION;

use super::{CGROUP, END, HEADER, Header, LOST, MAGIC, PATH, RECORD, SYMBOL, Trailer};

pub struct TraceWriter {
    out: BufWriter<File>,
    symbols: HashSet<u64>,
    frame: BytesMut,
}

/// Type byte and little-endian length.
pub fn frame_head(kind: u8, len: usize) -> [u8; 5] {
    let l = (len as u32).to_le_bytes();
    [kind, l[0], l[1], l[2], l[3]]
}

impl TraceWriter {
    pub fn create(path: &Path, header: &Header) -> Result<Self> {
        let file =
            File::create(path).with_context(|| format!("cannot create trace file {}", path.display()))?;
        let mut w = Self {
            out: BufWriter::new(file),
            symbols: HashSet::new(),
            frame: BytesMut::with_capacity(1024),
        };
        w.out.write_all(MAGIC)?;
        w.out.write_all(&FORMAT_VERSION.to_le_bytes())?;
        let json = serde_json::to_vec(header)?;
        w.frame(HEADER, &json)?;
        Ok(w)
    }

    fn frame(&mut self, kind: u8, payload: &[u8]) -> std::io::Result<()> {
        let head = frame_head(kind, payload.len());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        crc.update(payload);
        self.out.write_all(&head)?;
        self.out.write_all(payload)?;
        self.out.write_all(&crc.finalize().to_le_bytes())
    }

    pub fn record(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.frame(RECORD, bytes)
    }

    /// Once per address.
    pub fn symbol(&mut self, addr: u64, name: &str) -> std::io::Result<()> {
        if !self.symbols.insert(addr) {
            return Ok(());
        }
        self.frame.clear();
        self.frame.put_u64_le(addr);
        self.frame.put_slice(name.as_bytes());
        let f = self.frame.split().freeze();
        self.frame(SYMBOL, &f)
    }

    pub fn path(&mut self, dev: u32, ino: u64, path: Option<&str>) -> std::io::Result<()> {
        self.frame.clear();
        self.frame.put_u32_le(dev);
        self.frame.put_u64_le(ino);
        self.frame.put_slice(path.unwrap_or("").as_bytes());
        let f = self.frame.split().freeze();
        self.frame(PATH, &f)
    }

    pub fn cgroup(&mut self, id: u64, path: Option<&str>) -> std::io::Result<()> {
        self.frame.clear();
        self.frame.put_u64_le(id);
        self.frame.put_slice(path.unwrap_or("").as_bytes());
        let f = self.frame.split().freeze();
        self.frame(CGROUP, &f)
    }

    pub fn lost(&mut self, records: u64, ts_ns: u64) -> std::io::Result<()> {
        self.frame.clear();
        self.frame.put_u64_le(records);
        self.frame.put_u64_le(ts_ns);
        let f = self.frame.split().freeze();
        self.frame(LOST, &f)
    }

    /// Write the END frame and flush: only then is the file complete.
    pub fn finish(mut self, trailer: &Trailer) -> Result<()> {
        let json = serde_json::to_vec(trailer)?;
        self.frame(END, &json)?;
        self.out.flush().context("writing the trace file")?;
        Ok(())
    }
}
