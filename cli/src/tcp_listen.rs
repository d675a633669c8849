//! TCP listeners for `--listen`: inherited from the old version under their label, or
//! created here when nobody handed them over (a first start works like a hand-over).

use std::net::TcpListener;
use std::os::fd::OwnedFd;

use crate::failure::{Failure, EXIT_OTHER};
use crate::handover_args::ListenSpec;

/// Bind a listener (std sets SO_REUSEADDR, so a port in TIME_WAIT does not stop a restart).
pub fn create(spec: &ListenSpec) -> Result<OwnedFd, Failure> {
    let mut last = None;
    for addr in &spec.addrs {
        match TcpListener::bind(addr) {
            Ok(l) => return Ok(l.into()),
            Err(e) => last = Some(e),
        }
    }
    let e = last.map(|e| e.to_string()).unwrap_or_default();
    Err(Failure::other(
        EXIT_OTHER,
        format!(
            "error[listen]: cannot listen on {} for '{}': {e}; check that no other process uses the port and that the address belongs to this host",
            spec.text, spec.label
        ),
    ))
}

/// Order the descriptors for the command: the `--listen` labels first, in the order given
/// (inherited ones where the old version sent that label, new listeners for the others),
/// then every other inherited descriptor in the order it was sent. So a first start and a
/// take-over give the command the same descriptor numbers for the `--listen` labels.
///
/// A label the old version did not send (a new release that listens on one more port) is
/// created here; if that fails (typically: the old version still has the port under another
/// label) the message names the labels that were handed over. `taken` says whether a
/// predecessor handed over at all.
pub fn arrange(
    listen: &[ListenSpec],
    mut inherited: Vec<(String, OwnedFd)>,
    taken: bool,
    backlog: Option<u32>,
) -> Result<Vec<(String, OwnedFd)>, Failure> {
    let sent: Vec<String> = inherited.iter().map(|(l, _)| l.clone()).collect();
    let mut out = Vec::with_capacity(listen.len() + inherited.len());
    for spec in listen {
        match inherited.iter().position(|(l, _)| *l == spec.label) {
            Some(i) => out.push(inherited.remove(i)),
            None => match create(spec) {
                Ok(fd) => out.push((spec.label.clone(), fd)),
                Err(Failure::Other { code, message }) if taken => {
                    return Err(Failure::other(
                        code,
                        format!(
                            "{message} (the old version handed over [{}] but no '{}')",
                            sent.join(", "),
                            spec.label
                        ),
                    ))
                }
                Err(f) => return Err(f),
            },
        }
    }
    out.extend(inherited);
    // Created or inherited (an old version may have listened with a small backlog):
    // listen() again sets the backlog of a listening socket.
    let backlog = backlog.unwrap_or_else(update_lock::listen_backlog);
    for (label, fd) in &out {
        if listen.iter().any(|s| &s.label == label) {
            set_backlog(fd, backlog).map_err(|e| {
                Failure::other(
                    EXIT_OTHER,
                    format!("error[listen]: cannot set the listen backlog of '{label}' to {backlog}: {e}"),
                )
            })?;
        }
    }
    Ok(out)
}

fn set_backlog(fd: &OwnedFd, backlog: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let n = i32::try_from(backlog).unwrap_or(i32::MAX);
    // SAFETY: listen on a descriptor we own.
    if unsafe { libc::listen(fd.as_raw_fd(), n) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
