//! `lockctl handover ...`: which sub-command does what.

use update_lock::handover_complete;

use crate::args::{self, HandoverAction};
use crate::failure::Failure;
use crate::{handover_serve, handover_take, serve_child};

/// Run one `lockctl handover` sub-command; its exit status.
pub fn dispatch(action: HandoverAction) -> Result<i32, Failure> {
    match action {
        HandoverAction::Complete { paths, no_legacy } => {
            let written = handover_complete(&args::handover_options(&paths, no_legacy))?;
            for p in written {
                out!("hand-over signalled: {}", p.display());
            }
            Ok(0)
        }
        HandoverAction::Take {
            take,
            json,
            command,
        } => handover_take::run(&take, json, &command),
        HandoverAction::Serve {
            rendezvous,
            fds,
            serve,
            command,
        } => handover_serve::run(&rendezvous.options(), &fds, &serve, &command),
        HandoverAction::Run {
            take,
            serve,
            command,
        } => {
            let (child, _) = handover_take::take(&take)?;
            handover_serve::serve(&take.rendezvous.options(), child, &serve, &command)
        }
        HandoverAction::Exec { place, command } => Err(serve_child::exec_helper(&place, &command)),
    }
}
