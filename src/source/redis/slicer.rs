//! The replication stream after the snapshot, cut into segments.
//!
//! A master sends its replica the commands it executed, each a RESP array
//! of bulk strings (`*3\r\n$3\r\nSET\r\n…`), in the order it ran them,
//! `SELECT`s and `PING`s included. Every byte counts towards the
//! replication offset. [`Slicer`] appends what the socket yields, finds the
//! end of each complete command (a command may arrive split across reads),
//! and cuts a [`Segment`] only at a command boundary, so each segment
//! replays on its own once the ones before it have. `REPLCONF GETACK` in the
//! stream is noted so the capture answers it.
//!
//! Memory: the open slice (at most `slice_max_bytes` of complete commands,
//! since it is cut as soon as it reaches that) plus the one command being
//! received; a single command larger than the cap becomes a segment of its own.
//! Times are recorded as marks `(offset, unix ms)`: every byte up to
//! `offset` was received by then, at most one mark per [`MARK_EVERY_MS`].

/// Finest time resolution of a restore inside a segment.
pub const MARK_EVERY_MS: i64 = 50;

/// Longest header line accepted in the stream (`*<n>` or `$<len>`).
const MAX_HEADER: usize = 32;

/// The end of the `\r\n`-terminated line starting at `at` (index of `\r`).
fn line_end(buf: &[u8], at: usize) -> Result<Option<usize>, String> {
    let window = &buf[at..buf.len().min(at + MAX_HEADER)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some(at + i)),
        None if window.len() == MAX_HEADER => Err(format!(
            "a RESP header at byte {at} runs past {MAX_HEADER} bytes without a line end"
        )),
        None => Ok(None),
    }
}

fn number(buf: &[u8], from: usize, to: usize) -> Result<i64, String> {
    std::str::from_utf8(&buf[from..to])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "`{}` is not a RESP length",
                String::from_utf8_lossy(&buf[from..to])
            )
        })
}

/// A parsed command: its length in bytes and its arguments.
pub type Command<'a> = (usize, Vec<&'a [u8]>);

/// The complete command (a RESP array of bulk strings) at the start of
/// `buf`; `None` until all of it is there.
pub fn parse_command(buf: &[u8]) -> Result<Option<Command<'_>>, String> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != b'*' {
        return Err(format!(
            "the replication stream holds byte {:?} where a command (`*`) must start",
            buf[0] as char
        ));
    }
    let Some(e) = line_end(buf, 0)? else {
        return Ok(None);
    };
    let n = number(buf, 1, e)?;
    let mut pos = e + 2;
    let mut args = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n.max(0) {
        if pos >= buf.len() {
            return Ok(None);
        }
        if buf[pos] != b'$' {
            return Err(format!(
                "a command argument starts with {:?}, not `$`",
                buf[pos] as char
            ));
        }
        let Some(e) = line_end(buf, pos)? else {
            return Ok(None);
        };
        let len = number(buf, pos + 1, e)?;
        let len = usize::try_from(len).map_err(|_| format!("bulk length {len}"))?;
        let body = e + 2;
        if buf.len() < body + len + 2 {
            return Ok(None);
        }
        if &buf[body + len..body + len + 2] != b"\r\n" {
            return Err("a bulk string does not end with CRLF".into());
        }
        args.push(&buf[body..body + len]);
        pos = body + len + 2;
    }
    Ok(Some((pos, args)))
}

/// The length of the complete RESP2 reply at the start of `buf` and whether
/// it is an error (top level `-`); `None` until all of it is there.
pub fn reply_len(buf: &[u8]) -> Result<Option<(usize, bool)>, String> {
    let mut pos = 0;
    let mut pending: i64 = 1;
    let is_err = buf.first() == Some(&b'-');
    while pending > 0 {
        if pos >= buf.len() {
            return Ok(None);
        }
        let Some(e) = line_end_long(buf, pos) else {
            return Ok(None);
        };
        match buf[pos] {
            b'+' | b'-' | b':' => {
                pos = e + 2;
                pending -= 1;
            }
            b'$' => {
                let len = number(buf, pos + 1, e)?;
                pos = e + 2;
                if len >= 0 {
                    let len = len as usize;
                    if buf.len() < pos + len + 2 {
                        return Ok(None);
                    }
                    pos += len + 2;
                }
                pending -= 1;
            }
            b'*' => {
                let n = number(buf, pos + 1, e)?;
                pos = e + 2;
                pending += n.max(0) - 1;
            }
            c => return Err(format!("unexpected reply byte {:?}", c as char)),
        }
    }
    Ok(Some((pos, is_err)))
}

/// The `\r` ending the line at `at` (simple strings and errors may be long).
fn line_end_long(buf: &[u8], at: usize) -> Option<usize> {
    buf[at..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| at + i)
}

/// Whether `args` is `REPLCONF GETACK …` (the master asks for an ACK).
pub fn is_getack(args: &[&[u8]]) -> bool {
    args.len() >= 2
        && args[0].eq_ignore_ascii_case(b"REPLCONF")
        && args[1].eq_ignore_ascii_case(b"GETACK")
}

/// Whether replay skips `args`: the link's own traffic (`PING`, `REPLCONF`).
pub fn is_link_traffic(args: &[&[u8]]) -> bool {
    args.first()
        .is_some_and(|c| c.eq_ignore_ascii_case(b"PING") || c.eq_ignore_ascii_case(b"REPLCONF"))
}

/// A cut piece of the stream: whole commands from offset `start` (the
/// offset of the byte before the first) to `end` (of the last byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Replication offset before the first byte.
    pub start: u64,
    /// Replication offset of the last byte (`start + bytes.len()`).
    pub end: u64,
    /// When its first byte was received (unix ms).
    pub t0_ms: i64,
    /// When it was cut: every byte of it was received by then (unix ms).
    pub t1_ms: i64,
    /// `(offset, unix ms)`: every byte up to `offset` was received by then.
    pub marks: Vec<(u64, i64)>,
    /// The raw stream bytes.
    pub bytes: Vec<u8>,
}

/// Cuts the stream into segments at command boundaries (module doc).
#[derive(Debug)]
pub struct Slicer {
    buf: Vec<u8>,
    complete: usize,
    start: u64,
    opened_ms: Option<i64>,
    marks: Vec<(u64, i64)>,
    getack: bool,
    cap: usize,
}

impl Slicer {
    /// A slicer whose first byte follows offset `start`, cutting at `cap` bytes.
    pub fn new(start: u64, cap: usize) -> Slicer {
        Slicer {
            buf: Vec::new(),
            complete: 0,
            start,
            opened_ms: None,
            marks: Vec::new(),
            getack: false,
            cap,
        }
    }

    /// Appends bytes received at `now_ms`.
    pub fn feed(&mut self, bytes: &[u8], now_ms: i64) -> Result<(), String> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.opened_ms.get_or_insert(now_ms);
        self.buf.extend_from_slice(bytes);
        while let Some((n, args)) = parse_command(&self.buf[self.complete..])? {
            if is_getack(&args) {
                self.getack = true;
            }
            self.complete += n;
        }
        let at = self.start + self.complete as u64;
        match self.marks.last_mut() {
            Some(m) if m.0 == at => {}
            Some(m) if now_ms - m.1 < MARK_EVERY_MS => *m = (at, now_ms),
            _ => self.marks.push((at, now_ms)),
        }
        Ok(())
    }

    /// Offset of the last byte of the last complete command.
    pub fn complete_end(&self) -> u64 {
        self.start + self.complete as u64
    }

    /// Bytes of complete commands not cut yet.
    pub fn pending(&self) -> usize {
        self.complete
    }

    /// When the open slice received its first byte (unix ms), if it has one.
    pub fn opened_ms(&self) -> Option<i64> {
        self.opened_ms
    }

    /// The open slice reached the size cap.
    pub fn is_full(&self) -> bool {
        self.complete >= self.cap
    }

    /// Whether a `REPLCONF GETACK` arrived since the last call.
    pub fn take_getack(&mut self) -> bool {
        std::mem::take(&mut self.getack)
    }

    /// Cuts the complete commands into a segment (`None` when there are none);
    /// a partly received command stays for the next one.
    pub fn cut(&mut self, now_ms: i64) -> Option<Segment> {
        if self.complete == 0 {
            return None;
        }
        let end = self.complete_end();
        let bytes: Vec<u8> = self.buf.drain(..self.complete).collect();
        let marks: Vec<(u64, i64)> = std::mem::take(&mut self.marks)
            .into_iter()
            .filter(|m| m.0 <= end && m.0 > self.start)
            .collect();
        let seg = Segment {
            start: self.start,
            end,
            t0_ms: self.opened_ms.unwrap_or(now_ms),
            t1_ms: now_ms,
            marks,
            bytes,
        };
        self.start = end;
        self.complete = 0;
        self.opened_ms = (!self.buf.is_empty()).then_some(now_ms);
        if self.buf.capacity() > self.cap * 2 {
            self.buf.shrink_to(self.cap);
        }
        Some(seg)
    }
}

/// The `(from, to)` byte ranges of the commands of a segment's bytes; an
/// error when they do not end at a command boundary.
pub fn commands(bytes: &[u8]) -> Result<Vec<(usize, usize)>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        match parse_command(&bytes[pos..])? {
            Some((n, _)) => {
                out.push((pos, pos + n));
                pos += n;
            }
            None => return Err(format!("the segment ends inside a command at byte {pos}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        out
    }

    #[test]
    fn a_command_split_across_reads_is_complete_only_at_its_last_byte() {
        let set = cmd(&["SET", "key", "a value"]);
        let mut s = Slicer::new(1000, 1 << 20);
        for (i, b) in set.iter().enumerate() {
            assert_eq!(s.pending(), 0, "complete after {i} bytes");
            s.feed(&[*b], 10).unwrap();
        }
        assert_eq!(s.pending(), set.len());
        assert_eq!(s.complete_end(), 1000 + set.len() as u64);
    }

    #[test]
    fn offsets_run_on_across_a_slice_boundary_and_the_partial_command_waits() {
        let a = cmd(&["SELECT", "0"]);
        let b = cmd(&["SET", "k", "v"]);
        let c = cmd(&["REPLCONF", "GETACK", "*"]);
        let mut stream = [a.clone(), b.clone(), c.clone()].concat();
        let split = a.len() + b.len() + 5; // inside `c`
        let tail = stream.split_off(split);
        let mut s = Slicer::new(42, 1 << 20);
        s.feed(&stream, 100).unwrap();
        assert!(!s.take_getack());
        let seg = s.cut(200).unwrap();
        assert_eq!((seg.start, seg.end), (42, 42 + (a.len() + b.len()) as u64));
        assert_eq!(seg.bytes, [a.clone(), b.clone()].concat());
        assert_eq!((seg.t0_ms, seg.t1_ms), (100, 200));
        assert_eq!(seg.marks, vec![(seg.end, 100)]);
        assert!(s.cut(210).is_none(), "a partial command is not cut");
        s.feed(&tail, 300).unwrap();
        assert!(s.take_getack(), "GETACK seen once complete");
        let seg2 = s.cut(400).unwrap();
        assert_eq!(seg2.start, seg.end, "the next segment starts where the last ended");
        assert_eq!(seg2.end, 42 + (a.len() + b.len() + c.len()) as u64);
        assert_eq!(seg2.bytes, c);
        assert_eq!(seg2.t0_ms, 200, "opened when the partial command was kept");
        assert_eq!(commands(&seg2.bytes).unwrap(), vec![(0, c.len())]);
    }

    #[test]
    fn the_cap_fills_and_marks_are_thinned() {
        let one = cmd(&["SET", "k", "0123456789"]);
        let mut s = Slicer::new(0, one.len() * 3);
        s.feed(&one, 0).unwrap();
        s.feed(&one, 10).unwrap();
        assert!(!s.is_full());
        s.feed(&one, 100).unwrap();
        assert!(s.is_full());
        let seg = s.cut(100).unwrap();
        let l = one.len() as u64;
        assert_eq!(seg.marks, vec![(2 * l, 10), (3 * l, 100)]);
    }

    #[test]
    fn garbage_and_replies_are_told_apart() {
        assert!(parse_command(b"+OK\r\n").is_err());
        assert!(parse_command(b"*1\r\n:5\r\n").is_err());
        assert_eq!(reply_len(b"+OK\r\n").unwrap(), Some((5, false)));
        assert_eq!(reply_len(b"-ERR x\r\n").unwrap(), Some((8, true)));
        assert_eq!(
            reply_len(b"*2\r\n$1\r\na\r\n:1\r\n+rest").unwrap(),
            Some((15, false))
        );
        assert_eq!(reply_len(b"*2\r\n$1\r\na\r\n").unwrap(), None);
        assert_eq!(reply_len(b"$-1\r\n").unwrap(), Some((5, false)));
    }
}
