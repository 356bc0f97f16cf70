//! libvirt domain lifecycle events as a stream of owned Rust values.
//!
//! The watchdog must learn about a crashed or stopped VM within a second, which polling cannot do
//! cheaply; libvirt pushes lifecycle events instead. The `virt` 0.5 crate has no safe way to
//! register for them, so the [`ffi`] submodule below is the one place in vmwarden that calls
//! virt-sys directly. Everything else here is safe code: the pure mapping of libvirt's numbers to
//! names (unit-tested), the reconnect backoff, and the supervisor thread.
//!
//! How it works:
//! - libvirt delivers events from its *default event loop*, which is process-global and cannot be
//!   unregistered: it is registered once per process and run by one dedicated thread
//!   (`libvirt-event-loop`) for the life of the process. Every [`EventStream`] shares it.
//! - Each [`EventStream`] owns a supervisor thread (`libvirt-events`) that opens a read-only
//!   connection (enough for events, no polkit), registers a lifecycle callback, a close callback
//!   and keepalive (5 s × 3: a libvirtd that hangs rather than dies is noticed too), and then
//!   waits. The C callbacks copy what they need into owned values and never block or panic: an
//!   event goes straight to the consumer's unbounded channel, a close to the supervisor.
//! - When the connection is lost (libvirtd restarted or stopped), events are lost with it: the
//!   supervisor sends [`EventItem::Lost`], logs the loss once, and reconnects with exponential
//!   backoff (0.5 s doubling to 10 s; a connection must stay up 10 s to reset it, so a daemon that
//!   accepts and drops at once is not hammered). Failed attempts during one outage log at debug.
//!   Every successful connection, the first included, sends [`EventItem::Connected`]: events from
//!   before it may be missing, so the consumer must reconcile against libvirt's state then.
//! - Dropping the stream (or [`EventStream::stop`]) deregisters the callbacks, closes the
//!   connection and ends the supervisor; the wait for it is bounded (a supervisor stuck opening a
//!   connection to a hung libvirtd is left to finish on its own and exits when the open returns).
#![deny(unsafe_code)]

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// libvirt's `virDomainEventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifecycleKind {
    Defined,
    Undefined,
    Started,
    Suspended,
    Resumed,
    Stopped,
    Shutdown,
    PMSuspended,
    Crashed,
    /// A type this build does not know (a newer libvirt): kept as libvirt's number.
    Other(i32),
}

impl LifecycleKind {
    /// From libvirt's number (`VIR_DOMAIN_EVENT_*`).
    pub fn from_raw(event: i32) -> LifecycleKind {
        match event {
            0 => LifecycleKind::Defined,
            1 => LifecycleKind::Undefined,
            2 => LifecycleKind::Started,
            3 => LifecycleKind::Suspended,
            4 => LifecycleKind::Resumed,
            5 => LifecycleKind::Stopped,
            6 => LifecycleKind::Shutdown,
            7 => LifecycleKind::PMSuspended,
            8 => LifecycleKind::Crashed,
            n => LifecycleKind::Other(n),
        }
    }

    /// A stable lowercase name for logs and labels ("other" for unknown types).
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleKind::Defined => "defined",
            LifecycleKind::Undefined => "undefined",
            LifecycleKind::Started => "started",
            LifecycleKind::Suspended => "suspended",
            LifecycleKind::Resumed => "resumed",
            LifecycleKind::Stopped => "stopped",
            LifecycleKind::Shutdown => "shutdown",
            LifecycleKind::PMSuspended => "pmsuspended",
            LifecycleKind::Crashed => "crashed",
            LifecycleKind::Other(_) => "other",
        }
    }
}

/// What libvirt's per-type detail number means (the `virDomainEvent*DetailType` enums), or
/// "unknown" for a number this build does not know; the number itself is kept in
/// [`DomainEvent::detail`], so nothing is guessed. The names follow libvirt's own docs in
/// lowercase. Values marked "newer" are defined by libvirt releases after 9.0 (Debian 12 never
/// sends them) and are taken from virt-sys's bindings, not invented.
pub fn detail_text(kind: LifecycleKind, detail: i32) -> &'static str {
    use LifecycleKind as K;
    match (kind, detail) {
        (K::Defined, 0) => "added",
        (K::Defined, 1) => "updated",
        (K::Defined, 2) => "renamed",
        (K::Defined, 3) => "from snapshot",
        (K::Undefined, 0) => "removed",
        (K::Undefined, 1) => "renamed",
        (K::Started, 0) => "booted",
        (K::Started, 1) => "migrated",
        (K::Started, 2) => "restored",
        (K::Started, 3) => "from snapshot",
        (K::Started, 4) => "wakeup",
        (K::Started, 5) => "recreated", // newer
        (K::Suspended, 0) => "paused",
        (K::Suspended, 1) => "migrated",
        (K::Suspended, 2) => "ioerror",
        (K::Suspended, 3) => "watchdog",
        (K::Suspended, 4) => "restored",
        (K::Suspended, 5) => "from snapshot",
        (K::Suspended, 6) => "api error",
        (K::Suspended, 7) => "postcopy",
        (K::Suspended, 8) => "postcopy failed",
        (K::Suspended, 9) => "guest shutdown", // newer
        (K::Resumed, 0) => "unpaused",
        (K::Resumed, 1) => "migrated",
        (K::Resumed, 2) => "from snapshot",
        (K::Resumed, 3) => "postcopy",
        (K::Resumed, 4) => "postcopy failed",
        (K::Stopped, 0) => "shutdown",
        (K::Stopped, 1) => "destroyed",
        (K::Stopped, 2) => "crashed",
        (K::Stopped, 3) => "migrated",
        (K::Stopped, 4) => "saved",
        (K::Stopped, 5) => "failed",
        (K::Stopped, 6) => "from snapshot",
        (K::Stopped, 7) => "recreated", // newer
        // Shutdown: "finished" = the guest is gone after a shutdown; "guest"/"host" say who
        // asked for it (libvirt ≥ 3.4 sends these along with or instead of "finished").
        (K::Shutdown, 0) => "finished",
        (K::Shutdown, 1) => "guest",
        (K::Shutdown, 2) => "host",
        (K::PMSuspended, 0) => "memory",
        (K::PMSuspended, 1) => "disk",
        (K::Crashed, 0) => "panicked",
        (K::Crashed, 1) => "crashloaded",
        _ => "unknown",
    }
}

/// One lifecycle event, copied out of libvirt's callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainEvent {
    pub domain: String,
    pub uuid: String,
    pub kind: LifecycleKind,
    /// libvirt's detail number for this kind, as sent.
    pub detail: i32,
    /// What `detail` means for `kind` ([`detail_text`]); "unknown" if this build does not know.
    pub detail_text: &'static str,
}

impl DomainEvent {
    /// From libvirt's raw event type and detail numbers.
    pub fn from_raw(domain: String, uuid: String, event: i32, detail: i32) -> DomainEvent {
        let kind = LifecycleKind::from_raw(event);
        DomainEvent {
            domain,
            uuid,
            kind,
            detail,
            detail_text: detail_text(kind, detail),
        }
    }
}

/// What the stream delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventItem {
    Event(DomainEvent),
    /// Subscribed (first time or again after a loss): events before this may be missing, so
    /// reconcile against libvirt's state now.
    Connected,
    /// The connection is gone (or could not be made), with why; events are lost until the next
    /// `Connected`. Sent once per outage.
    Lost(String),
}

/// Why a stream could not start at all (connection failures are not errors: they are `Lost`
/// items and retries).
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("libvirt event loop: {0}")]
    EventLoop(String),
    #[error("cannot spawn the libvirt events thread: {0}")]
    Spawn(#[from] std::io::Error),
}

/// Exponential backoff between reconnection attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next attempt; each call doubles the following one up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A connection that lived this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How often the supervisor also asks libvirt whether the connection is alive: a backstop in case
/// a driver never calls the close callback. A local check, no round trip.
const ALIVE_CHECK: Duration = Duration::from_secs(1);
/// How long drop waits for the supervisor to finish.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Messages to the supervisor thread.
enum Ctl {
    Stop,
    /// The close callback of connection number `generation` fired.
    Closed {
        generation: u64,
        reason: String,
    },
}

/// A subscription to lifecycle events of every domain on one libvirt URI, kept across libvirtd
/// restarts. Dropping it ends it.
pub struct EventStream {
    rx: UnboundedReceiver<EventItem>,
    ctl: mpsc::Sender<Ctl>,
    thread: Option<JoinHandle<()>>,
    done: mpsc::Receiver<()>,
}

impl EventStream {
    /// Subscribe to `uri` (read-only). Returns at once: the first item is `Connected`, or `Lost`
    /// with libvirt's reason if the first attempt fails (then it keeps retrying).
    pub fn start(uri: &str) -> Result<EventStream, EventsError> {
        ffi::ensure_event_loop().map_err(EventsError::EventLoop)?;
        let (tx, rx) = unbounded_channel();
        let (ctl_tx, ctl_rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let uri = uri.to_string();
        let sup_ctl = ctl_tx.clone();
        let thread = std::thread::Builder::new()
            .name("libvirt-events".into())
            .spawn(move || {
                supervise(&uri, &tx, &sup_ctl, &ctl_rx);
                let _ = done_tx.send(());
            })?;
        Ok(EventStream {
            rx,
            ctl: ctl_tx,
            thread: Some(thread),
            done,
        })
    }

    /// The items, in the order libvirt sent them. `recv().await` from a tokio task;
    /// `blocking_recv()` from a plain thread.
    pub fn receiver(&mut self) -> &mut UnboundedReceiver<EventItem> {
        &mut self.rx
    }

    /// End the subscription: deregister, close the connection, end the thread (bounded wait).
    /// Returns the receiver so items already queued can still be read; it yields `None` once
    /// libvirt has released every callback context (each holds a sender), which tests use to
    /// check that nothing registered is leaked.
    pub fn stop(mut self) -> UnboundedReceiver<EventItem> {
        self.shutdown();
        let (_, empty) = unbounded_channel();
        std::mem::replace(&mut self.rx, empty)
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let _ = self.ctl.send(Ctl::Stop);
        match self.done.recv_timeout(STOP_WAIT) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = thread.join();
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Stuck in a libvirt call (a hung libvirtd): it sees Stop when the call returns.
                tracing::warn!("libvirt events thread did not stop within {STOP_WAIT:?}; detached");
            }
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Wait until `deadline` for Stop (true) on the control channel, ignoring stale closes.
fn stop_requested_before(ctl: &mpsc::Receiver<Ctl>, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ctl.recv_timeout(left) {
            Ok(Ctl::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return true,
            Ok(Ctl::Closed { .. }) => continue,
            Err(mpsc::RecvTimeoutError::Timeout) => return false,
        }
    }
}

/// The supervisor: connect, wait for a loss or Stop, reconnect with backoff.
fn supervise(
    uri: &str,
    tx: &UnboundedSender<EventItem>,
    ctl_tx: &mpsc::Sender<Ctl>,
    ctl: &mpsc::Receiver<Ctl>,
) {
    let mut backoff = Backoff::new(BACKOFF_INITIAL, BACKOFF_MAX);
    let mut generation = 0u64;
    // Whether the current outage was already reported (Lost sent, warning logged).
    let mut outage_reported = false;
    let mut ever_connected = false;
    loop {
        generation += 1;
        match ffi::Connection::open(uri, tx.clone(), ctl_tx.clone(), generation) {
            Ok(conn) => {
                if ever_connected {
                    tracing::info!(uri, "libvirt event connection re-established");
                } else {
                    tracing::info!(uri, "subscribed to libvirt lifecycle events");
                }
                ever_connected = true;
                if tx.send(EventItem::Connected).is_err() {
                    return; // nobody listens any more
                }
                let up_since = Instant::now();
                let reason = loop {
                    match ctl.recv_timeout(ALIVE_CHECK) {
                        Ok(Ctl::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        Ok(Ctl::Closed {
                            generation: g,
                            reason,
                        }) if g == generation => break reason,
                        Ok(Ctl::Closed { .. }) => continue, // an earlier connection's
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            if tx.is_closed() {
                                return;
                            }
                            if !conn.is_alive() {
                                break "connection no longer alive".to_string();
                            }
                        }
                    }
                };
                drop(conn);
                tracing::warn!(uri, %reason, "libvirt event connection lost; events may be missed until it is back");
                outage_reported = true;
                if tx.send(EventItem::Lost(reason)).is_err() {
                    return;
                }
                if up_since.elapsed() >= STABLE_AFTER {
                    backoff.reset();
                }
            }
            Err(e) => {
                if outage_reported {
                    tracing::debug!(uri, error = %e, "libvirt event connection still down");
                } else {
                    tracing::warn!(uri, error = %e, "cannot subscribe to libvirt events; retrying with backoff");
                    outage_reported = true;
                    if tx.send(EventItem::Lost(e)).is_err() {
                        return;
                    }
                }
            }
        }
        if stop_requested_before(ctl, Instant::now() + backoff.next_delay()) {
            return;
        }
    }
}

/// The FFI: event loop, connection, callbacks. Each unsafe block says why it is sound.
#[allow(unsafe_code)]
mod ffi {
    use std::ffi::{c_char, c_int, c_void, CStr, CString};
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::{mpsc, OnceLock};
    use std::time::Duration;

    use tokio::sync::mpsc::UnboundedSender;
    use virt_sys as sys;

    use super::{Ctl, DomainEvent, EventItem};

    static EVENT_LOOP: OnceLock<Result<(), String>> = OnceLock::new();

    /// libvirt's last error on this thread, copied (the pointer is only valid until the next
    /// libvirt call on this thread).
    fn last_error() -> String {
        // SAFETY: virGetLastErrorMessage has no preconditions; it returns a pointer to a
        // NUL-terminated string (a static "no error" when there is none), valid until the next
        // libvirt call on this thread, and we copy it before making one.
        let p = unsafe { sys::virGetLastErrorMessage() };
        if p.is_null() {
            return "unknown libvirt error".into();
        }
        // SAFETY: non-null, NUL-terminated, see above.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// Register libvirt's default event implementation and start the thread that runs it, once
    /// per process (it cannot be unregistered, so the thread lives as long as the process).
    pub(super) fn ensure_event_loop() -> Result<(), String> {
        EVENT_LOOP
            .get_or_init(|| {
                // libvirt's default error handler prints every error to stderr; we report them
                // ourselves (the probe does the same, this is idempotent).
                virt::error::clear_error_callback();
                // SAFETY: no preconditions; called once (OnceLock) and before any connection of
                // ours is opened, as libvirt requires for the connection to use the loop.
                if unsafe { sys::virEventRegisterDefaultImpl() } < 0 {
                    return Err(last_error());
                }
                std::thread::Builder::new()
                    .name("libvirt-event-loop".into())
                    .spawn(run_event_loop)
                    .map(|_| ())
                    .map_err(|e| format!("cannot spawn the libvirt event loop thread: {e}"))
            })
            .clone()
    }

    fn run_event_loop() {
        let mut failures = 0u64;
        loop {
            // SAFETY: the default implementation was registered (ensure_event_loop) before this
            // thread started, and this is the only thread that runs it.
            if unsafe { sys::virEventRunDefaultImpl() } < 0 {
                if failures == 0 {
                    tracing::warn!(error = %last_error(), "libvirt event loop iteration failed");
                }
                failures += 1;
                // Never spin on a loop that keeps failing.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Context of the lifecycle callback: owned by libvirt from a successful registration until
    /// it calls `free_event_ctx`.
    struct EventCtx {
        tx: UnboundedSender<EventItem>,
    }

    /// Context of the close callback, same ownership rule (`free_close_ctx`).
    struct CloseCtx {
        ctl: mpsc::Sender<Ctl>,
        generation: u64,
    }

    /// Copy a C string libvirt lends us; empty if null.
    ///
    /// # Safety
    /// `p` is null or a valid NUL-terminated string for the duration of the call.
    unsafe fn lent_str(p: *const c_char) -> String {
        if p.is_null() {
            return String::new();
        }
        // SAFETY: per this function's contract.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// `virConnectDomainEventCallback` for VIR_DOMAIN_EVENT_ID_LIFECYCLE. Runs on the event loop
    /// thread; copies and sends, never blocks, never unwinds into C.
    unsafe extern "C" fn on_lifecycle(
        _conn: sys::virConnectPtr,
        dom: sys::virDomainPtr,
        event: c_int,
        detail: c_int,
        opaque: *mut c_void,
    ) -> c_int {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            if opaque.is_null() || dom.is_null() {
                return;
            }
            // SAFETY: opaque is the Box<EventCtx> we registered; libvirt keeps it alive until
            // free_event_ctx, which it never runs while a callback with it is being dispatched.
            let ctx = unsafe { &*(opaque as *const EventCtx) };
            // SAFETY: dom is valid for the duration of the callback (libvirt holds a reference);
            // the name it returns is owned by dom and copied at once.
            let domain = unsafe { lent_str(sys::virDomainGetName(dom)) };
            let mut buf = [0 as c_char; sys::VIR_UUID_STRING_BUFLEN as usize];
            // SAFETY: buf has the VIR_UUID_STRING_BUFLEN bytes the call writes (NUL included).
            let uuid = if unsafe { sys::virDomainGetUUIDString(dom, buf.as_mut_ptr()) } == 0 {
                // SAFETY: on success buf holds a NUL-terminated string.
                unsafe { lent_str(buf.as_ptr()) }
            } else {
                String::new()
            };
            // Unbounded: never blocks the loop. Fails only when the consumer is gone.
            let _ = ctx.tx.send(EventItem::Event(DomainEvent::from_raw(
                domain, uuid, event, detail,
            )));
        }));
        0
    }

    unsafe extern "C" fn free_event_ctx(opaque: *mut c_void) {
        if opaque.is_null() {
            return;
        }
        // SAFETY: opaque came from Box::into_raw in Connection::open and libvirt calls the free
        // callback exactly once, after the last callback with it.
        let ctx = unsafe { Box::from_raw(opaque as *mut EventCtx) };
        // Dropping a Sender cannot panic, but never unwind into C regardless.
        let _ = catch_unwind(AssertUnwindSafe(move || drop(ctx)));
    }

    fn close_reason(reason: c_int) -> String {
        match reason as u32 {
            sys::VIR_CONNECT_CLOSE_REASON_ERROR => "connection closed: I/O error".into(),
            sys::VIR_CONNECT_CLOSE_REASON_EOF => "connection closed by libvirtd (EOF)".into(),
            sys::VIR_CONNECT_CLOSE_REASON_KEEPALIVE => {
                "libvirtd stopped answering keepalives".into()
            }
            sys::VIR_CONNECT_CLOSE_REASON_CLIENT => "connection closed by the client".into(),
            n => format!("connection closed (reason {n})"),
        }
    }

    unsafe extern "C" fn on_close(_conn: sys::virConnectPtr, reason: c_int, opaque: *mut c_void) {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            if opaque.is_null() {
                return;
            }
            // SAFETY: opaque is the Box<CloseCtx> we registered, alive until free_close_ctx.
            let ctx = unsafe { &*(opaque as *const CloseCtx) };
            let _ = ctx.ctl.send(Ctl::Closed {
                generation: ctx.generation,
                reason: close_reason(reason),
            });
        }));
    }

    unsafe extern "C" fn free_close_ctx(opaque: *mut c_void) {
        if opaque.is_null() {
            return;
        }
        // SAFETY: from Box::into_raw in Connection::open; libvirt frees it exactly once.
        let ctx = unsafe { Box::from_raw(opaque as *mut CloseCtx) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(ctx)));
    }

    /// One read-only connection with our callbacks registered. Drop undoes it all.
    pub(super) struct Connection {
        conn: sys::virConnectPtr,
        /// Lifecycle callback id (≥ 0).
        callback_id: c_int,
        close_registered: bool,
    }

    // SAFETY: libvirt connections are thread-safe (libvirt locks them internally); the pointer is
    // only used through libvirt calls.
    unsafe impl Send for Connection {}

    impl Connection {
        pub(super) fn open(
            uri: &str,
            tx: UnboundedSender<EventItem>,
            ctl: mpsc::Sender<Ctl>,
            generation: u64,
        ) -> Result<Connection, String> {
            let c_uri = CString::new(uri).map_err(|_| format!("URI {uri:?} contains NUL"))?;
            // SAFETY: c_uri is a valid NUL-terminated string for the call.
            let conn = unsafe { sys::virConnectOpenReadOnly(c_uri.as_ptr()) };
            if conn.is_null() {
                return Err(format!("cannot open {uri}: {}", last_error()));
            }
            // From here on, Drop releases whatever was set up.
            let mut me = Connection {
                conn,
                callback_id: -1,
                close_registered: false,
            };

            // Keepalive notices a libvirtd that hangs (EOF already covers one that dies). 1 means
            // the driver has no keepalive (local drivers): nothing to do then.
            // SAFETY: conn is an open connection.
            if unsafe { sys::virConnectSetKeepAlive(conn, 5, 3) } < 0 {
                return Err(format!("keepalive on {uri}: {}", last_error()));
            }

            let close_ctx = Box::into_raw(Box::new(CloseCtx { ctl, generation })) as *mut c_void;
            // SAFETY: conn is open; on success libvirt owns close_ctx and frees it with
            // free_close_ctx (on unregister or when the connection is disposed); on failure it
            // does not keep it and we free it here.
            let rc = unsafe {
                sys::virConnectRegisterCloseCallback(
                    conn,
                    Some(on_close),
                    close_ctx,
                    Some(free_close_ctx),
                )
            };
            if rc < 0 {
                let e = last_error();
                // SAFETY: libvirt did not take close_ctx (registration failed).
                drop(unsafe { Box::from_raw(close_ctx as *mut CloseCtx) });
                return Err(format!("close callback on {uri}: {e}"));
            }
            me.close_registered = true;

            let event_ctx = Box::into_raw(Box::new(EventCtx { tx })) as *mut c_void;
            // SAFETY: libvirt's generic callback type stands for the per-event signature; for
            // VIR_DOMAIN_EVENT_ID_LIFECYCLE it calls a virConnectDomainEventCallback, which is
            // on_lifecycle's exact signature (this cast is libvirt's documented
            // VIR_DOMAIN_EVENT_CALLBACK idiom).
            let cb: unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void) = unsafe {
                std::mem::transmute::<
                    unsafe extern "C" fn(
                        sys::virConnectPtr,
                        sys::virDomainPtr,
                        c_int,
                        c_int,
                        *mut c_void,
                    ) -> c_int,
                    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void),
                >(on_lifecycle)
            };
            // SAFETY: conn is open; a null domain means every domain; ownership of event_ctx as
            // for the close callback: libvirt frees it with free_event_ctx after a successful
            // registration, and does not keep it when the registration fails.
            let id = unsafe {
                sys::virConnectDomainEventRegisterAny(
                    conn,
                    std::ptr::null_mut(),
                    sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE as c_int,
                    Some(cb),
                    event_ctx,
                    Some(free_event_ctx),
                )
            };
            if id < 0 {
                let e = last_error();
                // SAFETY: libvirt did not take event_ctx (registration failed).
                drop(unsafe { Box::from_raw(event_ctx as *mut EventCtx) });
                return Err(format!("lifecycle events on {uri}: {e}"));
            }
            me.callback_id = id;
            Ok(me)
        }

        /// libvirt's local view of the connection (no round trip).
        pub(super) fn is_alive(&self) -> bool {
            // SAFETY: self.conn is open until Drop.
            unsafe { sys::virConnectIsAlive(self.conn) == 1 }
        }
    }

    impl Drop for Connection {
        fn drop(&mut self) {
            if self.callback_id >= 0 {
                // SAFETY: conn is open and callback_id is ours. On a dead connection the server
                // side call fails, but the local callback is removed (and its context freed)
                // first; anything left is freed when the connection is disposed.
                unsafe { sys::virConnectDomainEventDeregisterAny(self.conn, self.callback_id) };
            }
            if self.close_registered {
                // SAFETY: conn is open and on_close is the callback we registered; libvirt frees
                // the context with free_close_ctx.
                unsafe { sys::virConnectUnregisterCloseCallback(self.conn, Some(on_close)) };
            }
            // SAFETY: we own one reference to conn, released exactly once here. libvirt keeps the
            // object alive while it still dispatches on it.
            unsafe { sys::virConnectClose(self.conn) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_libvirt_numbers_and_keep_unknown_ones() {
        let all = [
            (0, LifecycleKind::Defined),
            (1, LifecycleKind::Undefined),
            (2, LifecycleKind::Started),
            (3, LifecycleKind::Suspended),
            (4, LifecycleKind::Resumed),
            (5, LifecycleKind::Stopped),
            (6, LifecycleKind::Shutdown),
            (7, LifecycleKind::PMSuspended),
            (8, LifecycleKind::Crashed),
        ];
        for (n, k) in all {
            assert_eq!(LifecycleKind::from_raw(n), k);
        }
        assert_eq!(LifecycleKind::from_raw(9), LifecycleKind::Other(9));
        assert_eq!(LifecycleKind::from_raw(-1), LifecycleKind::Other(-1));
    }

    /// The numbers are the ones in virt-sys's bindings, so a mismatch between our table and
    /// libvirt's header fails here, not in production.
    #[test]
    fn detail_texts_match_libvirt_constants() {
        use virt_sys as s;
        use LifecycleKind as K;
        let c = |v: u32| v as i32;
        let table: &[(K, i32, &str)] = &[
            (K::Defined, c(s::VIR_DOMAIN_EVENT_DEFINED_ADDED), "added"),
            (
                K::Defined,
                c(s::VIR_DOMAIN_EVENT_DEFINED_UPDATED),
                "updated",
            ),
            (
                K::Defined,
                c(s::VIR_DOMAIN_EVENT_DEFINED_RENAMED),
                "renamed",
            ),
            (
                K::Defined,
                c(s::VIR_DOMAIN_EVENT_DEFINED_FROM_SNAPSHOT),
                "from snapshot",
            ),
            (
                K::Undefined,
                c(s::VIR_DOMAIN_EVENT_UNDEFINED_REMOVED),
                "removed",
            ),
            (
                K::Undefined,
                c(s::VIR_DOMAIN_EVENT_UNDEFINED_RENAMED),
                "renamed",
            ),
            (K::Started, c(s::VIR_DOMAIN_EVENT_STARTED_BOOTED), "booted"),
            (
                K::Started,
                c(s::VIR_DOMAIN_EVENT_STARTED_MIGRATED),
                "migrated",
            ),
            (
                K::Started,
                c(s::VIR_DOMAIN_EVENT_STARTED_RESTORED),
                "restored",
            ),
            (
                K::Started,
                c(s::VIR_DOMAIN_EVENT_STARTED_FROM_SNAPSHOT),
                "from snapshot",
            ),
            (K::Started, c(s::VIR_DOMAIN_EVENT_STARTED_WAKEUP), "wakeup"),
            (
                K::Started,
                c(s::VIR_DOMAIN_EVENT_STARTED_RECREATED),
                "recreated",
            ),
            (
                K::Suspended,
                c(s::VIR_DOMAIN_EVENT_SUSPENDED_PAUSED),
                "paused",
            ),
            (
                K::Suspended,
                c(s::VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED),
                "migrated",
            ),
            (
                K::Suspended,
                c(s::VIR_DOMAIN_EVENT_SUSPENDED_IOERROR),
                "ioerror",
            ),
            (
                K::Suspended,
                c(s::VIR_DOMAIN_EVENT_SUSPENDED_WATCHDOG),
                "watchdog",
            ),
            (
                K::Suspended,
                c(s::VIR_DOMAIN_EVENT_SUSPENDED_RESTORED),
                "restored",
            ),
            (
                K::Suspended,
                c(s::VIR_DOMAIN_EVENT_SUSPENDED_FROM_SNAPSHOT),
                "from snapshot",
            ),
            (
                K::Suspended,
                c(s::VIR_DOMAIN_EVENT_SUSPENDED_API_ERROR),
                "api error",
            ),
            (
                K::Suspended,
                c(s::VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY),
                "postcopy",
            ),
            (
                K::Suspended,
                c(s::VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY_FAILED),
                "postcopy failed",
            ),
            (
                K::Suspended,
                c(s::VIR_DOMAIN_EVENT_SUSPENDED_GUEST_SHUTDOWN),
                "guest shutdown",
            ),
            (
                K::Resumed,
                c(s::VIR_DOMAIN_EVENT_RESUMED_UNPAUSED),
                "unpaused",
            ),
            (
                K::Resumed,
                c(s::VIR_DOMAIN_EVENT_RESUMED_MIGRATED),
                "migrated",
            ),
            (
                K::Resumed,
                c(s::VIR_DOMAIN_EVENT_RESUMED_FROM_SNAPSHOT),
                "from snapshot",
            ),
            (
                K::Resumed,
                c(s::VIR_DOMAIN_EVENT_RESUMED_POSTCOPY),
                "postcopy",
            ),
            (
                K::Resumed,
                c(s::VIR_DOMAIN_EVENT_RESUMED_POSTCOPY_FAILED),
                "postcopy failed",
            ),
            (
                K::Stopped,
                c(s::VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN),
                "shutdown",
            ),
            (
                K::Stopped,
                c(s::VIR_DOMAIN_EVENT_STOPPED_DESTROYED),
                "destroyed",
            ),
            (
                K::Stopped,
                c(s::VIR_DOMAIN_EVENT_STOPPED_CRASHED),
                "crashed",
            ),
            (
                K::Stopped,
                c(s::VIR_DOMAIN_EVENT_STOPPED_MIGRATED),
                "migrated",
            ),
            (K::Stopped, c(s::VIR_DOMAIN_EVENT_STOPPED_SAVED), "saved"),
            (K::Stopped, c(s::VIR_DOMAIN_EVENT_STOPPED_FAILED), "failed"),
            (
                K::Stopped,
                c(s::VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT),
                "from snapshot",
            ),
            (
                K::Stopped,
                c(s::VIR_DOMAIN_EVENT_STOPPED_RECREATED),
                "recreated",
            ),
            (
                K::Shutdown,
                c(s::VIR_DOMAIN_EVENT_SHUTDOWN_FINISHED),
                "finished",
            ),
            (K::Shutdown, c(s::VIR_DOMAIN_EVENT_SHUTDOWN_GUEST), "guest"),
            (K::Shutdown, c(s::VIR_DOMAIN_EVENT_SHUTDOWN_HOST), "host"),
            (
                K::PMSuspended,
                c(s::VIR_DOMAIN_EVENT_PMSUSPENDED_MEMORY),
                "memory",
            ),
            (
                K::PMSuspended,
                c(s::VIR_DOMAIN_EVENT_PMSUSPENDED_DISK),
                "disk",
            ),
            (
                K::Crashed,
                c(s::VIR_DOMAIN_EVENT_CRASHED_PANICKED),
                "panicked",
            ),
            (
                K::Crashed,
                c(s::VIR_DOMAIN_EVENT_CRASHED_CRASHLOADED),
                "crashloaded",
            ),
        ];
        for &(k, d, want) in table {
            assert_eq!(detail_text(k, d), want, "{k:?} detail {d}");
        }
        // The type numbers agree with the header too.
        assert_eq!(
            LifecycleKind::from_raw(c(s::VIR_DOMAIN_EVENT_STOPPED)),
            K::Stopped
        );
        assert_eq!(
            LifecycleKind::from_raw(c(s::VIR_DOMAIN_EVENT_CRASHED)),
            K::Crashed
        );
        assert_eq!(
            LifecycleKind::from_raw(c(s::VIR_DOMAIN_EVENT_SHUTDOWN)),
            K::Shutdown
        );
    }

    #[test]
    fn unknown_details_stay_numbers() {
        let e = DomainEvent::from_raw("vm".into(), "u".into(), 5, 42);
        assert_eq!(e.kind, LifecycleKind::Stopped);
        assert_eq!((e.detail, e.detail_text), (42, "unknown"));
        let e = DomainEvent::from_raw("vm".into(), "u".into(), 99, 0);
        assert_eq!(e.kind, LifecycleKind::Other(99));
        assert_eq!(e.detail_text, "unknown");
        assert_eq!(detail_text(LifecycleKind::Shutdown, 3), "unknown");
        assert_eq!(detail_text(LifecycleKind::Crashed, -1), "unknown");
        let e = DomainEvent::from_raw("vm".into(), "u".into(), 5, 1);
        assert_eq!(e.detail_text, "destroyed");
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        let got: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [500, 1000, 2000, 4000, 8000, 10000, 10000, 10000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(500));
    }

    /// A URI libvirt cannot open gives one Lost with libvirt's reason, then quiet retries; drop
    /// ends the thread (bounded).
    #[test]
    fn unopenable_uri_reports_lost_once_and_stops() {
        let mut s = EventStream::start("vmwarden-nonexistent-driver:///x").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let first = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), s.receiver().recv()).await
        });
        match first {
            Ok(Some(EventItem::Lost(why))) => assert!(why.contains("cannot open"), "{why}"),
            other => panic!("wanted Lost, got {other:?}"),
        }
        // Retries after 0.5 s and 1 s fail too, and stay quiet on the channel.
        let second = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(2), s.receiver().recv()).await
        });
        assert!(
            second.is_err(),
            "a second item during one outage: {second:?}"
        );
        // The thread is gone and no libvirt context holds a sender: the channel ends.
        let mut rx = s.stop();
        let end =
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), rx.recv()).await });
        assert_eq!(end, Ok(None));
    }
}
