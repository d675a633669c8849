//! Signals `lockctl` forwards to its command, handled on one thread with `sigwait` so that it
//! also works as PID 1 (where signals without a handler are ignored by the kernel).

use std::sync::{Arc, Mutex};

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;
use update_lock::CancelToken;

/// The signals `lockctl run` forwards to its command.
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

#[derive(Default)]
struct State {
    child: Option<Pid>,
    first_signal: Option<Signal>,
}

/// Forwarding state shared with the signal thread.
#[derive(Clone)]
pub struct Forwarder {
    state: Arc<Mutex<State>>,
    cancel: CancelToken,
}

impl Forwarder {
    /// Block the forwarded signals in this (still single-threaded) process and start the
    /// thread that receives them: before a child exists a signal cancels the wait for the
    /// lock; afterwards it is sent on to the child.
    pub fn start(cancel: CancelToken) -> std::io::Result<Forwarder> {
        let fwd = Forwarder {
            state: Arc::new(Mutex::new(State::default())),
            cancel,
        };
        let worker = fwd.clone();
        spawn_receiver(move |sig| worker.deliver(sig))?;
        Ok(fwd)
    }

    fn deliver(&self, sig: Signal) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match st.child {
            Some(pid) => {
                let _ = kill(pid, sig);
            }
            None => {
                st.first_signal.get_or_insert(sig);
                self.cancel.cancel();
            }
        }
    }

    /// The signal that arrived before there was a child, if any.
    pub fn early_signal(&self) -> Option<Signal> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first_signal
    }

    /// From now on forward to `pid`; a signal that arrived just before is sent on too.
    pub fn set_child(&self, pid: Pid) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.child = Some(pid);
        if let Some(sig) = st.first_signal.take() {
            let _ = kill(pid, sig);
        }
    }
}

/// Block the [`FORWARDED`] signals in this (still single-threaded) process, so every later
/// thread inherits the mask, and hand each one that arrives to `on_signal` on a dedicated
/// thread (`sigwait`).
pub fn spawn_receiver(on_signal: impl Fn(Signal) + Send + 'static) -> std::io::Result<()> {
    let set = forwarded_set();
    set.thread_block().map_err(std::io::Error::from)?;
    std::thread::Builder::new()
        .name("lockctl-signals".into())
        .spawn(move || loop {
            if let Ok(sig) = set.wait() {
                on_signal(sig);
            }
        })?;
    Ok(())
}

fn forwarded_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set
}

/// Unblock the forwarded signals again (in a child about to exec: the mask is inherited).
pub fn unblock_all() {
    let _ =
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&forwarded_set()), None);
}
