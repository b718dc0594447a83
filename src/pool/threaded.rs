//! A ready-made worker that runs a handler on its own named thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use std::sync::mpsc::{self, Receiver, Sender};

use super::worker::Worker;

enum Message<R> {
    Request(R),
    Shutdown,
}

/// The request channel of a [`ThreadedWorker`] is closed: its thread has exited.
#[derive(Debug, thiserror::Error)]
#[error("the worker thread has exited")]
pub struct WorkerGone;

/// A worker that owns a thread: requests go over a channel (`std::sync::mpsc`) to a handler running on
/// that thread, a shutdown message stops it, and eviction joins it. Requests usually carry their
/// own reply channel.
///
/// ```
/// use std::sync::mpsc::{sync_channel, SyncSender};
///
/// use poolwarden::pool::ThreadedWorker;
/// use poolwarden::Worker;
///
/// let worker = ThreadedWorker::spawn("model-a", 1 << 20, |(x, reply): (u32, SyncSender<u32>)| {
///     let _ = reply.send(x * 2);
/// })
/// .unwrap();
/// let (tx, rx) = sync_channel(1);
/// worker.send((21, tx)).unwrap();
/// assert_eq!(rx.recv().unwrap(), 42);
/// worker.shutdown();
/// assert!(!worker.is_alive());
/// ```
pub struct ThreadedWorker<R: Send + 'static> {
    sender: Sender<Message<R>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    running: Arc<AtomicBool>,
    memory_bytes: u64,
}

/// Clears the running flag when the worker thread ends, by return or by panic.
struct RunningFlag(Arc<AtomicBool>);

impl Drop for RunningFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl<R: Send + 'static> ThreadedWorker<R> {
    /// Starts a thread named `name` that calls `handler` for each request until shut down.
    /// `memory_bytes` is the footprint the pool accounts for it.
    pub fn spawn(
        name: &str,
        memory_bytes: u64,
        handler: impl FnMut(R) + Send + 'static,
    ) -> std::io::Result<Self> {
        Self::spawn_with(name, memory_bytes, move || handler)
    }

    /// Like [`ThreadedWorker::spawn`], but builds the handler on the worker's own thread (where a
    /// model should be loaded, so its memory belongs to that thread's lifetime).
    pub fn spawn_with<H, F>(name: &str, memory_bytes: u64, init: F) -> std::io::Result<Self>
    where
        H: FnMut(R),
        F: FnOnce() -> H + Send + 'static,
    {
        let (sender, receiver): (Sender<Message<R>>, Receiver<Message<R>>) = mpsc::channel();
        let running = Arc::new(AtomicBool::new(true));
        let flag = RunningFlag(Arc::clone(&running));
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let _flag = flag;
                let mut handler = init();
                while let Ok(Message::Request(request)) = receiver.recv() {
                    handler(request);
                }
            })?;
        Ok(ThreadedWorker {
            sender,
            thread: Mutex::new(Some(thread)),
            running,
            memory_bytes,
        })
    }

    /// Sends a request to the worker's thread.
    pub fn send(&self, request: R) -> Result<(), WorkerGone> {
        self.sender
            .send(Message::Request(request))
            .map_err(|_| WorkerGone)
    }
}

impl<R: Send + 'static> Worker for ThreadedWorker<R> {
    fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    fn is_alive(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    fn shutdown(&self) {
        let _ = self.sender.send(Message::Shutdown);
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let name = thread.thread().name().unwrap_or("worker").to_string();
            if thread.join().is_err() {
                log::warn!("worker thread `{name}` had panicked");
            }
        }
    }
}

impl<R: Send + 'static> Drop for ThreadedWorker<R> {
    fn drop(&mut self) {
        self.shutdown();
    }
}
