//! A step's stdout or stderr: kept in memory up to a cap; what comes after
//! is dropped (the guest is not told, so it carries on) and the report
//! marks the output truncated.

use bytes::{Bytes, BytesMut};
use std::sync::{Arc, Mutex};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

#[derive(Clone)]
pub struct Capture {
    inner: Arc<Mutex<Inner>>,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    buffer: BytesMut,
    truncated: bool,
}

impl Capture {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Default::default(),
            capacity,
        }
    }

    /// What was kept, and whether anything was dropped.
    pub fn contents(&self) -> (String, bool) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (
            String::from_utf8_lossy(&inner.buffer).into_owned(),
            inner.truncated,
        )
    }

    fn keep(&self, bytes: &[u8]) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.capacity.saturating_sub(inner.buffer.len());
        if bytes.len() > room {
            inner.truncated = true;
        }
        inner
            .buffer
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

#[async_trait::async_trait]
impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.keep(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always writable: past the cap, writes are dropped, not refused.
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.keep(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_past_the_cap_is_dropped_and_marked() {
        let mut c = Capture::new(4);
        c.write(Bytes::from_static(b"abc")).unwrap();
        assert_eq!(c.contents(), ("abc".to_string(), false));
        c.write(Bytes::from_static(b"defg")).unwrap();
        assert_eq!(c.contents(), ("abcd".to_string(), true));
    }
}
