//! Writes realistic JSON-lines test data (glucose readings, predictions) to
//! stdout: `gen_jsonl BYTES [SEED]`. Used by the benchmarks; not random noise
//! and not zeros, so compression ratios and speeds are representative.

use std::io::{BufWriter, Write};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let total: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1 << 30);
    let mut x: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e3779b97f4a7c15);
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let mut written = 0u64;
    let mut line = String::with_capacity(256);
    let mut ts: u64 = 1_764_000_000_000;
    while written < total {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ts += x % 5000;
        line.clear();
        use std::fmt::Write as _;
        let _ = write!(
            line,
            "{{\"_id\":\"{:024x}\",\"patient_id\":\"pt-{:06}\",\"device\":\"cgm-{:04x}\",\"ts\":{},\"mg_dl\":{},\"trend\":\"{}\",\"predicted_mg_dl_30m\":{:.1},\"model\":\"lstm-v{}\",\"quality\":{:.3}}}\n",
            x as u128 * 0x1_0000_0001,
            (x >> 8) % 250_000,
            (x >> 20) & 0x3ff,
            ts,
            40 + (x >> 33) % 360,
            ["flat", "up", "down", "up_fast", "down_fast"][((x >> 3) % 5) as usize],
            40.0 + ((x >> 17) % 3600) as f64 / 10.0,
            (x >> 40) % 4,
            ((x >> 11) % 1000) as f64 / 1000.0,
        );
        let bytes = line.as_bytes();
        let n = bytes.len().min((total - written) as usize);
        out.write_all(&bytes[..n])?;
        written += n as u64;
    }
    out.flush()
}
