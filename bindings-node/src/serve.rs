//! The JavaScript side of the core's serve loop: the app's release step and resume, wrapped
//! by index.js into functions that never throw, called from the loop's blocking thread
//! through thread-safe functions, their Promises awaited there.

use napi::bindgen_prelude::*;
use napi::threadsafe_function::ThreadsafeFunction;
use napi_derive::napi;
use update_lock::{Error as CoreError, PeerInfo, ReleaseAnswer, ServeHooks};

use crate::peer::{GrantFd, Peer};

/// What the app's release step answered, as index.js passes it on.
#[napi(object)]
pub struct ReleaseReply {
    /// The state to hand over.
    pub state: Option<Buffer>,
    /// The descriptors to hand over (copies are sent).
    pub fds: Option<Vec<GrantFd>>,
    /// The release step threw: its message (index.js keeps the error itself and rethrows
    /// it from `serve`).
    pub failed: Option<String>,
}

/// `async (successor) => ReleaseReply`.
pub type ReleaseFn = ThreadsafeFunction<Peer, Promise<ReleaseReply>, Peer, Status, false>;
/// `async (error) => null | message` (the message when the app's resume threw).
pub type ResumeFn =
    ThreadsafeFunction<GrantFailure, Promise<Option<String>>, GrantFailure, Status, false>;

/// A failed grant, handed to the app's resume as the same error object every call rejects
/// with.
pub struct GrantFailure(CoreError);

impl ToNapiValue for GrantFailure {
    unsafe fn to_napi_value(env: napi::sys::napi_env, val: Self) -> Result<napi::sys::napi_value> {
        let env = Env::from_raw(env);
        let obj = crate::build_error(&env, &val.0)?;
        // SAFETY: the same env this value was asked for.
        unsafe { Object::to_napi_value(env.raw(), obj) }
    }
}

/// The hooks' failure: a message (the app's own error stays in index.js).
pub struct HookFailed(
    /// The message.
    pub String,
);

impl std::fmt::Display for HookFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The hooks, run on the serve loop's blocking thread.
pub struct NodeHooks {
    /// index.js's wrapper of the app's release step.
    pub release: ReleaseFn,
    /// index.js's wrapper of the app's resume (a no-op when the app gave none).
    pub resume: ResumeFn,
    /// The runtime the loop's blocking thread awaits the JavaScript Promises on.
    pub runtime: tokio::runtime::Handle,
}

impl ServeHooks for NodeHooks {
    type Error = HookFailed;

    fn release(&mut self, successor: &PeerInfo) -> std::result::Result<ReleaseAnswer, HookFailed> {
        let call = self.release.call_async_catch(Peer::from(successor));
        let reply = self
            .runtime
            .block_on(async { call.await?.await })
            .map_err(|e| HookFailed(e.reason.clone()))?;
        if let Some(message) = reply.failed {
            return Err(HookFailed(message));
        }
        let mut fds = Vec::new();
        for g in reply.fds.unwrap_or_default() {
            fds.push((g.label.clone(), g.copy().map_err(HookFailed)?));
        }
        Ok(ReleaseAnswer::Grant {
            state: reply.state.map(|b| b.to_vec()).unwrap_or_default(),
            fds,
        })
    }

    fn resume(&mut self, failure: CoreError) -> std::result::Result<(), HookFailed> {
        let call = self.resume.call_async_catch(GrantFailure(failure));
        match self.runtime.block_on(async { call.await?.await }) {
            Ok(None) => Ok(()),
            Ok(Some(message)) => Err(HookFailed(message)),
            Err(e) => Err(HookFailed(e.reason.clone())),
        }
    }
}
