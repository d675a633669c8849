//! One hand-over connection: framed sends and receives with descriptors attached
//! (SCM_RIGHTS), each bounded by a deadline and interruptible through a [`WaitControl`].

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    getsockopt, recv, recvmsg, send, sendmsg, sockopt, ControlMessage, ControlMessageOwned,
    MsgFlags, UnixAddr,
};

use super::failure::HandoverFailure;
use super::wire::{self, Header, Kind, HEADER_LEN, MAX_FDS};
use crate::error::{Error, Result};
use crate::lock::wait::WaitControl;

/// A frame as received: header, payload, and the descriptors that came with it.
pub(crate) struct Frame {
    pub header: Header,
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// A connected, non-blocking hand-over socket.
#[derive(Debug)]
pub(crate) struct Conn {
    fd: OwnedFd,
    socket: PathBuf,
}

/// The error for a failed hand-over step.
pub(crate) fn fail(socket: &Path, reason: HandoverFailure, detail: impl Into<String>) -> Error {
    Error::Handover {
        socket: socket.to_path_buf(),
        reason,
        detail: detail.into(),
    }
}

/// Wait until `fd` is ready for `events`. `Ok(false)` when the deadline passed first.
pub(crate) fn wait_ready(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    deadline: Option<Instant>,
    ctl: &mut WaitControl<'_>,
    socket: &Path,
) -> Result<bool> {
    wait_ready_or(fd, events, deadline, ctl, socket, None)
}

/// [`wait_ready`], also ending (with `Ok(true)`) when `also` becomes readable.
pub(crate) fn wait_ready_or(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    deadline: Option<Instant>,
    ctl: &mut WaitControl<'_>,
    socket: &Path,
    also: Option<BorrowedFd<'_>>,
) -> Result<bool> {
    let mut fds = vec![(fd, events)];
    fds.extend(also.map(|a| (a, PollFlags::POLLIN)));
    wait_fds(&fds, deadline, ctl, socket)
}

/// Wait until one of `fds` is readable (or `also`). `Ok(false)` when `deadline` passed
/// first.
pub(crate) fn wait_any(
    fds: &[BorrowedFd<'_>],
    deadline: Option<Instant>,
    ctl: &mut WaitControl<'_>,
    socket: &Path,
    also: Option<BorrowedFd<'_>>,
) -> Result<bool> {
    let mut all: Vec<(BorrowedFd<'_>, PollFlags)> =
        fds.iter().map(|fd| (*fd, PollFlags::POLLIN)).collect();
    all.extend(also.map(|a| (a, PollFlags::POLLIN)));
    wait_fds(&all, deadline, ctl, socket)
}

/// Wait until one of `fds` is ready for its events: `Ok(true)`; `Ok(false)` when the
/// deadline passed first. `ctl`'s cancel token ends the wait with `Cancelled`, its check
/// runs at least every period it names.
fn wait_fds(
    fds: &[(BorrowedFd<'_>, PollFlags)],
    deadline: Option<Instant>,
    ctl: &mut WaitControl<'_>,
    socket: &Path,
) -> Result<bool> {
    loop {
        let now = Instant::now();
        let mut slice = match deadline {
            Some(d) if d <= now => return Ok(false),
            Some(d) => d - now,
            None => std::time::Duration::from_secs(3600),
        };
        if let Some((every, _)) = &ctl.check {
            slice = slice.min(*every);
        }
        let ms = slice.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut polled: Vec<PollFd<'_>> =
            fds.iter().map(|(fd, ev)| PollFd::new(*fd, *ev)).collect();
        if let Some(t) = &ctl.cancel {
            polled.push(PollFd::new(t.fd(), PollFlags::POLLIN));
        }
        let ready = match poll(
            &mut polled,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) => polled
                .iter()
                .take(fds.len())
                .any(|f| f.revents().is_some_and(|r| !r.is_empty())),
            Err(Errno::EINTR) => false,
            Err(e) => {
                return Err(Error::from_os(
                    socket,
                    "wait on the hand-over socket",
                    e.into(),
                    String::new,
                ))
            }
        };
        drop(polled);
        if let Some(t) = &ctl.cancel {
            if t.is_cancelled() {
                return Err(Error::Cancelled {
                    path: socket.to_path_buf(),
                    waiting_for: Error::WAITING_FOR_HANDOVER,
                    by: None,
                });
            }
        }
        if let Some((_, check)) = &mut ctl.check {
            check()?;
        }
        if ready {
            return Ok(true);
        }
    }
}

impl Conn {
    pub(crate) fn new(fd: OwnedFd, socket: &Path) -> Conn {
        Conn {
            fd,
            socket: socket.to_path_buf(),
        }
    }

    /// The connection's descriptor, for polling.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether a whole frame can be read without waiting: its header and payload are all
    /// in the socket buffer, or the peer hung up, or what arrived is not a frame header
    /// (then reading fails at once). Never blocks.
    pub(crate) fn frame_ready(&self) -> bool {
        let mut head = [0u8; wire::HEADER_LEN];
        let n = match nix::sys::socket::recv(
            self.fd.as_raw_fd(),
            &mut head,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(n) => n,
            Err(Errno::EAGAIN) => return false,
            Err(_) => return true,
        };
        if n == 0 {
            return true; // hung up
        }
        if n < wire::HEADER_LEN {
            return false;
        }
        let Ok(h) = wire::decode_header(&head) else {
            return true;
        };
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through the pointer.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::FIONREAD, &mut queued) };
        r != 0 || queued as u64 >= wire::HEADER_LEN as u64 + u64::from(h.len)
    }

    /// The peer's uid and pid as the kernel saw them at connect / listen time.
    pub(crate) fn peer_cred(&self) -> Result<(u32, i32)> {
        getsockopt(&self.fd, sockopt::PeerCredentials)
            .map(|c| (c.uid(), c.pid()))
            .map_err(|e| {
                Error::from_os(
                    &self.socket,
                    "read the peer's credentials",
                    e.into(),
                    String::new,
                )
            })
    }

    fn io_err(&self, op: &'static str, e: Errno) -> Error {
        match e {
            Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN => fail(
                &self.socket,
                HandoverFailure::PeerGone,
                format!("the other version closed the connection ({op})"),
            ),
            _ => Error::from_os(&self.socket, op, e.into(), String::new),
        }
    }

    fn stalled(&self, what: &str) -> Error {
        fail(
            &self.socket,
            HandoverFailure::Stalled,
            format!("the other version did not {what} in time"),
        )
    }

    /// Wait until the socket is ready for `flags`, or fail as stalled (`what` the peer did
    /// not do in time).
    fn await_ready(
        &self,
        flags: PollFlags,
        deadline: Instant,
        ctl: &mut WaitControl<'_>,
        what: impl FnOnce() -> String,
    ) -> Result<()> {
        if wait_ready(self.fd.as_fd(), flags, Some(deadline), ctl, &self.socket)? {
            Ok(())
        } else {
            Err(self.stalled(&what()))
        }
    }

    /// Send one frame; `fds` travel with its first byte.
    pub(crate) fn send(
        &self,
        kind: Kind,
        payload: &[u8],
        fds: &[RawFd],
        deadline: Instant,
        ctl: &mut WaitControl<'_>,
    ) -> Result<()> {
        let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
        buf.extend_from_slice(&wire::encode_header(kind, fds.len(), payload.len()));
        buf.extend_from_slice(payload);
        let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
        let mut sent = 0;
        while sent < buf.len() {
            let r = if sent == 0 && !fds.is_empty() {
                let cmsg = [ControlMessage::ScmRights(fds)];
                sendmsg::<UnixAddr>(
                    self.fd.as_raw_fd(),
                    &[IoSlice::new(&buf)],
                    &cmsg,
                    flags,
                    None,
                )
            } else {
                send(self.fd.as_raw_fd(), &buf[sent..], flags)
            };
            match r {
                Ok(n) => sent += n,
                Err(Errno::EAGAIN) => {
                    self.await_ready(PollFlags::POLLOUT, deadline, ctl, || {
                        format!("read our {}", kind.name())
                    })?
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(self.io_err("send on the hand-over socket", e)),
            }
        }
        Ok(())
    }

    /// Receive one frame of at most `max_len` payload bytes. `what` names the awaited
    /// step for messages ("answer HELLO").
    pub(crate) fn recv(
        &self,
        max_len: usize,
        what: &str,
        deadline: Instant,
        ctl: &mut WaitControl<'_>,
    ) -> Result<Frame> {
        let mut fds = Vec::new();
        let mut hdr = [0u8; HEADER_LEN];
        let mut got = 0;
        while got < HEADER_LEN {
            match self.recv_header_part(&mut hdr[got..], &mut fds) {
                Ok(0) => {
                    return Err(fail(
                        &self.socket,
                        HandoverFailure::PeerGone,
                        format!(
                            "the other version closed the connection instead of a reply (expected it to {what})"
                        ),
                    ))
                }
                Ok(n) => got += n,
                Err(Errno::EAGAIN) => {
                    self.await_ready(PollFlags::POLLIN, deadline, ctl, || what.to_string())?
                }
                Err(Errno::EINTR) => {}
                Err(Errno::ENOBUFS) => {
                    return Err(fail(
                        &self.socket,
                        HandoverFailure::TooLarge,
                        format!("the other version sent more than {MAX_FDS} descriptors"),
                    ))
                }
                Err(e) => return Err(self.io_err("receive on the hand-over socket", e)),
            }
        }
        let header = wire::decode_header(&hdr)
            .map_err(|d| fail(&self.socket, HandoverFailure::Protocol, d))?;
        let len = header.len as usize;
        if len > max_len {
            return Err(fail(
                &self.socket,
                HandoverFailure::TooLarge,
                format!(
                    "the other version's {} frame has {len} bytes, more than the {max_len} allowed",
                    header.kind.name()
                ),
            ));
        }
        let mut payload = vec![0u8; len];
        let mut off = 0;
        while off < len {
            match recv(
                self.fd.as_raw_fd(),
                &mut payload[off..],
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(0) => {
                    return Err(fail(
                        &self.socket,
                        HandoverFailure::PeerGone,
                        format!(
                            "the other version closed the connection in the middle of its {} frame",
                            header.kind.name()
                        ),
                    ))
                }
                Ok(n) => off += n,
                Err(Errno::EAGAIN) => self.await_ready(PollFlags::POLLIN, deadline, ctl, || {
                    format!("finish its {} frame", header.kind.name())
                })?,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(self.io_err("receive on the hand-over socket", e)),
            }
        }
        if fds.len() != header.nfds as usize {
            return Err(fail(
                &self.socket,
                HandoverFailure::Protocol,
                format!(
                    "the {} frame announced {} descriptors but {} arrived",
                    header.kind.name(),
                    header.nfds,
                    fds.len()
                ),
            ));
        }
        Ok(Frame {
            header,
            payload,
            fds,
        })
    }

    /// One `recvmsg` into `buf`, collecting any descriptors (close-on-exec) into `fds`.
    fn recv_header_part(&self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> nix::Result<usize> {
        let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<UnixAddr>(
            self.fd.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let bytes = msg.bytes;
        let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    // SAFETY: the kernel just installed these descriptors in this process
                    // for us; nothing else owns them.
                    fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
                }
            }
        }
        if truncated {
            return Err(Errno::ENOBUFS);
        }
        Ok(bytes)
    }

    /// Wait for the peer to close or send anything, up to `deadline` (used after the last
    /// frame so a reply is not lost to an early close). Returns the frame if one came.
    pub(crate) fn recv_optional(
        &self,
        what: &str,
        deadline: Instant,
        ctl: &mut WaitControl<'_>,
    ) -> Option<Frame> {
        self.recv(wire::MAX_TEXT, what, deadline, ctl).ok()
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
