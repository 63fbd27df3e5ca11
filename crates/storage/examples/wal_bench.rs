//! Throughput of group commit on the real disk: N submitter threads, each with one entry in flight at a
//! time (or, with `--pipeline`, one thread keeping N entries in flight, as openraft's log task would).
//!
//! `cargo run --release -p oxkeeper-storage --example wal_bench -- --writers 32 --seconds 5 --dir /tmp/x`
//! Reports entries/s, batches (= fdatasyncs) per second, fdatasync latency, commit latency (submit to
//! completion) and process CPU time per entry (getrusage). Writes into a fresh subdirectory of `--dir`
//! and removes it afterwards.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oxkeeper_storage::{Disk, DiskFile, RealDisk, RealFile, Wal, WalOptions, WalWriter};

struct Args {
    writers: usize,
    seconds: f64,
    dir: PathBuf,
    entry_bytes: usize,
    segment_bytes: u64,
    zero_fill: bool,
    pipeline: bool,
    buffered: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        writers: 32,
        seconds: 5.0,
        dir: std::env::temp_dir(),
        entry_bytes: 100,
        segment_bytes: WalOptions::default().segment_bytes,
        zero_fill: false,
        pipeline: false,
        buffered: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--writers" => {
                args.writers = value()?.parse().map_err(|e| format!("--writers: {e}"))?
            }
            "--seconds" => {
                args.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?
            }
            "--dir" => args.dir = PathBuf::from(value()?),
            "--entry-bytes" => {
                args.entry_bytes = value()?
                    .parse()
                    .map_err(|e| format!("--entry-bytes: {e}"))?
            }
            "--segment-bytes" => {
                args.segment_bytes = value()?
                    .parse()
                    .map_err(|e| format!("--segment-bytes: {e}"))?
            }
            "--zero-fill" => args.zero_fill = true,
            "--pipeline" => args.pipeline = true,
            "--buffered" => args.buffered = true,
            "--help" | "-h" => {
                return Err(
                    "usage: wal_bench [--writers N] [--seconds S] [--dir DIR] [--entry-bytes B] \
                            [--segment-bytes B] [--zero-fill] [--pipeline] [--buffered]"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// `RealDisk` that times every fdatasync, and with `zero_fill` preallocates by writing zeros instead
/// of `posix_fallocate` (so later writes overwrite allocated blocks and fdatasync has no extent
/// metadata to commit).
#[derive(Clone)]
struct TimedDisk {
    sync_ns: Arc<Mutex<Vec<u64>>>,
    zero_fill: bool,
}

struct TimedFile {
    file: RealFile,
    sync_ns: Arc<Mutex<Vec<u64>>>,
    zero_fill: bool,
}

impl Disk for TimedDisk {
    type File = TimedFile;
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        RealDisk.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        RealDisk.list(dir)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<TimedFile> {
        Ok(TimedFile {
            file: RealDisk.open(path, create)?,
            sync_ns: Arc::clone(&self.sync_ns),
            zero_fill: self.zero_fill,
        })
    }
    fn open_log(&self, path: &Path, create: bool) -> io::Result<TimedFile> {
        Ok(TimedFile {
            file: RealDisk.open_log(path, create)?,
            sync_ns: Arc::clone(&self.sync_ns),
            zero_fill: self.zero_fill,
        })
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        RealDisk.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealDisk.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealDisk.sync_dir(dir)
    }
}

impl DiskFile for TimedFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_at(offset, buf)
    }
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        let start = Instant::now();
        let result = self.file.sync_data();
        let ns = start.elapsed().as_nanos() as u64;
        self.sync_ns.lock().expect("not poisoned").push(ns);
        result
    }
    fn allocate(&mut self, len: u64) -> io::Result<()> {
        if !self.zero_fill {
            return self.file.allocate(len);
        }
        let zeros = vec![0u8; 1 << 20];
        let mut at = self.file.len()?;
        while at < len {
            let n = (len - at).min(zeros.len() as u64);
            self.file.write_at(at, &zeros[..n as usize])?;
            at += n;
        }
        Ok(())
    }
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct we hand it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The value at quantile `q` of sorted `values`, in microseconds.
fn quantile_us(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

/// `writers` threads, each submitting one entry and waiting for it to be durable, in a loop. Returns
/// the commit latencies in nanoseconds.
fn run_threads(writer: &WalWriter, writers: usize, payload: &[u8], deadline: Instant) -> Vec<u64> {
    // Indices follow submission order: take one and submit under the same lock, as a log task would.
    let next_index = Mutex::new(1u64);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|_| {
                let next_index = &next_index;
                scope.spawn(move || {
                    let mut latencies = Vec::new();
                    let (tx, rx) = mpsc::channel();
                    while Instant::now() < deadline {
                        let submitted = Instant::now();
                        {
                            let mut next = next_index.lock().expect("not poisoned");
                            let tx = tx.clone();
                            writer.submit(
                                vec![(*next, payload.to_vec())],
                                Box::new(move |result| {
                                    let _ = tx.send(result);
                                }),
                            );
                            *next += 1;
                        }
                        rx.recv().expect("completion").expect("durable");
                        latencies.push(submitted.elapsed().as_nanos() as u64);
                    }
                    latencies
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer thread"))
            .collect()
    })
}

/// One thread keeping `in_flight` single-entry submissions outstanding, as openraft's log task does:
/// it measures the log's own cost without a thread handoff per entry.
fn run_pipeline(
    writer: &WalWriter,
    in_flight: usize,
    payload: &[u8],
    deadline: Instant,
) -> Vec<u64> {
    let (tx, rx) = mpsc::channel::<Instant>();
    let mut latencies = Vec::new();
    let mut outstanding = 0;
    let mut next = 1u64;
    loop {
        let open = Instant::now() < deadline;
        if open && outstanding < in_flight {
            let tx = tx.clone();
            let submitted = Instant::now();
            writer.submit(
                vec![(next, payload.to_vec())],
                Box::new(move |result| {
                    result.expect("durable");
                    let _ = tx.send(submitted);
                }),
            );
            next += 1;
            outstanding += 1;
            continue;
        }
        if outstanding == 0 {
            return latencies;
        }
        let submitted = rx.recv().expect("completion");
        latencies.push(submitted.elapsed().as_nanos() as u64);
        outstanding -= 1;
        // Drain whatever else completed without blocking, then refill.
        while let Ok(submitted) = rx.try_recv() {
            latencies.push(submitted.elapsed().as_nanos() as u64);
            outstanding -= 1;
        }
    }
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let dir = args.dir.join(format!("wal-bench-{}", std::process::id()));
    let disk = TimedDisk {
        sync_ns: Arc::new(Mutex::new(Vec::new())),
        zero_fill: args.zero_fill,
    };
    let opts = WalOptions {
        segment_bytes: args.segment_bytes,
        direct_writes: !args.buffered,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(disk.clone(), &dir, opts).expect("open the log");
    let writer = WalWriter::spawn(wal);
    let payload = vec![0xA5u8; args.entry_bytes];
    let duration = Duration::from_secs_f64(args.seconds);

    let cpu_before = cpu_time();
    let start = Instant::now();
    let deadline = start + duration;
    let commit_ns = if args.pipeline {
        run_pipeline(&writer, args.writers, &payload, deadline)
    } else {
        run_threads(&writer, args.writers, &payload, deadline)
    };
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_time() - cpu_before;
    let stats = writer.stats();
    writer.shutdown();

    let mut sync_ns = disk.sync_ns.lock().expect("not poisoned").clone();
    sync_ns.sort_unstable();
    let mut commit_ns = commit_ns;
    commit_ns.sort_unstable();
    let entries = stats.entries as f64;
    println!(
        "{} {}  entry {} B  segment {} MiB{}  {:.1} s  dir {}",
        if args.pipeline {
            "pipelined submissions in flight"
        } else {
            "writer threads"
        },
        args.writers,
        args.entry_bytes,
        args.segment_bytes >> 20,
        if args.zero_fill { " zero-filled" } else { "" },
        elapsed,
        args.dir.display()
    );
    println!(
        "entries/s {:.0}  batches/s {:.0}  entries/batch {:.1}  payload {:.2} MB/s",
        entries / elapsed,
        stats.batches as f64 / elapsed,
        entries / stats.batches.max(1) as f64,
        stats.entry_bytes as f64 / elapsed / 1e6
    );
    println!(
        "fdatasync: {} calls  p50 {:.0} us  p99 {:.0} us  max {:.0} us",
        sync_ns.len(),
        quantile_us(&sync_ns, 0.50),
        quantile_us(&sync_ns, 0.99),
        quantile_us(&sync_ns, 1.0)
    );
    println!(
        "commit (submit to durable): p50 {:.0} us  p99 {:.0} us",
        quantile_us(&commit_ns, 0.50),
        quantile_us(&commit_ns, 0.99)
    );
    println!(
        "cpu (whole process, user+sys): {:.2} s  {:.1} us/entry",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / entries.max(1.0)
    );
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        eprintln!("could not remove {}: {e}", dir.display());
    }
}
