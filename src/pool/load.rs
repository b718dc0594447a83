//! Loading workers: sync factories run on a thread of their own (never on a caller's thread or
//! an async runtime's), async factories are driven by the task that asked for the load, and
//! finish on a pool thread if that task goes away.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use super::worker::{SpawnError, Worker, WorkerFactory};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Creates a worker for a key asynchronously: any `Fn(&str) -> impl Future<Output =
/// Result<W, SpawnError>>` closure whose future owns what it needs (`'static`) is one.
///
/// ```
/// use poolwarden::{Pool, SpawnError, Worker};
///
/// struct Model { bytes: u64 }
/// impl Worker for Model {
///     fn memory_bytes(&self) -> u64 { self.bytes }
/// }
///
/// let pool = Pool::builder_async("text", |key: &str| {
///     let key = key.to_string(); // the future owns its key
///     async move {
///         // read weights, await a download... no runtime thread is blocked meanwhile
///         Ok::<_, SpawnError>(Model { bytes: 64 << 20 + key.len() as u64 })
///     }
/// })
/// .build();
/// let lease = futures_lite_block_on(pool.acquire_async("llama"));
/// # fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     poolwarden::pool::block_on(f)
/// # }
/// assert!(lease.is_ok());
/// ```
pub trait AsyncWorkerFactory<W>: Send + Sync + 'static {
    /// Starts creating a worker for `key`.
    fn spawn(&self, key: &str) -> BoxFuture<Result<W, SpawnError>>;
}

impl<W, F, Fut> AsyncWorkerFactory<W> for F
where
    F: Fn(&str) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<W, SpawnError>> + Send + 'static,
{
    fn spawn(&self, key: &str) -> BoxFuture<Result<W, SpawnError>> {
        Box::pin(self(key))
    }
}

/// Runs a future to completion somewhere else: the pool's [`crate::PoolBuilder::spawner`] (for
/// example `|f| { tokio::spawn(f); }`).
pub type Spawner = Arc<dyn Fn(BoxFuture<()>) + Send + Sync + 'static>;

/// How a pool makes workers.
pub(crate) enum Factory<W> {
    Sync(Box<dyn WorkerFactory<W>>),
    Async(Box<dyn AsyncWorkerFactory<W>>),
}

/// What a load ended with: a worker, the factory's error, or a panic.
pub(crate) type LoadResult<W> = Result<Result<W, SpawnError>, ()>;

/// An async load in progress, and who reports its end.
pub(crate) struct LoadTask<W> {
    future: BoxFuture<Result<W, SpawnError>>,
    finish: Option<Box<dyn FnOnce(LoadResult<W>) + Send>>,
}

impl<W: Worker> LoadTask<W> {
    pub(crate) fn new(
        future: BoxFuture<Result<W, SpawnError>>,
        finish: Box<dyn FnOnce(LoadResult<W>) + Send>,
    ) -> Self {
        LoadTask {
            future,
            finish: Some(finish),
        }
    }

    /// Polls the load; once it is done, reports it and returns `Ready`.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(_) = self.finish else {
            return Poll::Ready(());
        };
        let result = match catch_unwind(AssertUnwindSafe(|| self.future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(result)) => Ok(result),
            Err(_) => Err(()),
        };
        if let Some(finish) = self.finish.take() {
            finish(result);
        }
        Poll::Ready(())
    }

    /// Whether the load has ended and been reported.
    pub(crate) fn is_done(&self) -> bool {
        self.finish.is_none()
    }

    /// Hands an unfinished load over to `spawner`, or to a thread of its own named `name` that
    /// drives it to completion.
    pub(crate) fn detach(mut self, name: &str, spawner: Option<&Spawner>) {
        if self.is_done() {
            return;
        }
        if let Some(spawner) = spawner {
            spawner(Box::pin(std::future::poll_fn(move |cx| self.poll(cx))));
            return;
        }
        let spawned = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || block_on(std::future::poll_fn(|cx| self.poll(cx))));
        if let Err(e) = spawned {
            log::error!("{name}: cannot start a thread to finish a load: {e}");
        }
    }
}

/// Runs a sync factory on a thread of its own named `name`, then `finish`.
pub(crate) fn run_sync<W: Worker>(
    name: &str,
    load: impl FnOnce() -> Result<W, SpawnError> + Send + 'static,
    finish: Box<dyn FnOnce(LoadResult<W>) + Send>,
) {
    let finish_here = Arc::new(std::sync::Mutex::new(Some(finish)));
    let finish_there = Arc::clone(&finish_here);
    let spawned = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(load)).map_err(|_| ());
            let finish = finish_there
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(finish) = finish {
                finish(result);
            }
        });
    if let Err(e) = spawned {
        let finish = finish_here.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(finish) = finish {
            finish(Ok(Err(format!(
                "cannot start a thread to load the worker: {e}"
            )
            .into())));
        }
    }
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` to completion on this thread, parking it while the future waits: a minimal
/// executor for tests, doc examples and loads that outlive their task.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}
