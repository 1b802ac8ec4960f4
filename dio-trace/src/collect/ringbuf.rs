//! The ring buffer, read with tokio: wait until the kernel says there is
//! data, then drain everything there is.

use std::io;

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

pub struct RingReader {
    fd: AsyncFd<RingBuf<MapData>>,
}

impl RingReader {
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        // SAFETY: the ring buffer owns its map fd and keeps it open, and
        // unchanged, until it is dropped, which happens only with this
        // AsyncFd (we never hand the RingBuf out).
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }?;
        Ok(Self { fd })
    }

    /// Wait for the kernel's wake-up. Readiness is cleared here, so call
    /// [`RingReader::drain`] after: records that arrive in between are
    /// picked up by that drain or by the next wake-up or tick.
    pub async fn ready(&mut self) -> io::Result<()> {
        let mut guard = self.fd.readable_mut().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Hand every waiting record to `f`; stops at its first error.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        let ring = self.fd.get_mut();
        while let Some(item) = ring.next() {
            f(&item)?;
        }
        Ok(())
    }
}
