//! Standard input read on a thread of its own, for `classify --stream`: a
//! stream whose model side failed (a full disk, a device error) must end
//! even when the link is quiet. A `read` blocked on a pipe cannot be woken,
//! so the pump thread does the blocking reads and hands their bytes over a
//! channel that [`Stopper::stop`] can also reach; the stream's reader waits
//! on that channel instead, and the pump stays blocked in its `read` until
//! the process exits. A read that waits [`QUIET`] without a byte fails with
//! `ErrorKind::TimedOut`, so that the capture reader can let the flow table's
//! clock move on while the link is quiet
//! (`CaptureReader::for_each_frame_or_quiet`).

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::Duration;

/// Bytes per read, and chunks the channel holds: up to 256 KiB read ahead.
const CHUNK: usize = 64 << 10;
const CHUNKS: usize = 4;
/// How long a read waits before it reports the input quiet.
pub const QUIET: Duration = Duration::from_secs(1);

enum Msg {
    Bytes(Vec<u8>),
    Failed(io::Error),
    /// The end of the input (or `stop`): reads give 0 from then on.
    End,
    Stop,
}

/// The pumped input, read as any `Read`.
pub struct PumpedRead {
    rx: Receiver<Msg>,
    chunk: Vec<u8>,
    at: usize,
    ended: bool,
}

/// Ends the pumped input's reads from another thread.
#[derive(Clone)]
pub struct Stopper(SyncSender<Msg>);

/// Starts the pump thread on `input`.
pub fn pump(mut input: impl Read + Send + 'static) -> (PumpedRead, Stopper) {
    let (tx, rx) = sync_channel(CHUNKS);
    let stopper = Stopper(tx.clone());
    std::thread::spawn(move || {
        loop {
            let mut buf = vec![0; CHUNK];
            let msg = match input.read(&mut buf) {
                Ok(0) => Msg::End,
                Ok(n) => {
                    buf.truncate(n);
                    Msg::Bytes(buf)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Msg::Failed(e),
            };
            let last = !matches!(msg, Msg::Bytes(_));
            // The reader has gone: nothing more to read for.
            if tx.send(msg).is_err() || last {
                return;
            }
        }
    });
    let read = PumpedRead {
        rx,
        chunk: Vec::new(),
        at: 0,
        ended: false,
    };
    (read, stopper)
}

impl Stopper {
    /// The reader's next read past what it holds fails (it is told the
    /// stream stopped). Call it only once the reader no longer waits on
    /// the model side (it must drain the channel for this send to go
    /// through, or have gone).
    pub fn stop(&self) {
        let _ = self.0.send(Msg::Stop);
    }
}

impl Read for PumpedRead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv_timeout(QUIET) {
                Err(RecvTimeoutError::Timeout) => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "no input"));
                }
                Ok(Msg::Bytes(b)) => (self.chunk, self.at) = (b, 0),
                Ok(Msg::Failed(e)) => {
                    self.ended = true;
                    return Err(e);
                }
                Ok(Msg::Stop) => {
                    self.ended = true;
                    return Err(io::Error::other("the stream stopped"));
                }
                Ok(Msg::End) | Err(RecvTimeoutError::Disconnected) => self.ended = true,
            }
        }
        let n = out.len().min(self.chunk.len() - self.at);
        out[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_every_byte_through_in_order() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let (mut r, _stop) = pump(std::io::Cursor::new(data.clone()));
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
    }

    #[test]
    fn stop_wakes_a_reader_waiting_on_a_quiet_input() {
        // The write end stays open: the pump blocks as on a quiet link.
        let (r, mut w) = std::io::pipe().unwrap();
        std::io::Write::write_all(&mut w, b"abc").unwrap();
        let (mut r, stop) = pump(r);
        let mut b = [0u8; 8];
        assert_eq!(r.read(&mut b).unwrap(), 3);
        // The next read would wait for bytes that never come (each read
        // reports the quiet spell after QUIET).
        let waiter = std::thread::spawn(move || {
            loop {
                match r.read(&mut b) {
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => continue,
                    r => break r.map_err(|e| e.to_string()),
                }
            }
        });
        stop.stop();
        let err = waiter.join().unwrap().unwrap_err();
        assert!(err.contains("stopped"), "{err}");
    }

    #[test]
    fn a_quiet_input_times_out_and_then_reads_on() {
        let (r, mut w) = std::io::pipe().unwrap();
        let (mut r, _stop) = pump(r);
        let mut b = [0u8; 8];
        let e = r.read(&mut b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        std::io::Write::write_all(&mut w, b"xy").unwrap();
        drop(w);
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"xy");
    }
}
