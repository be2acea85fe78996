//! SCRUB (fdfs-rs command 220, see `fdfs_proto::scrub_msg`): starts a scrub of this
//! storage's files in the background, or reports how the current or last one went.

use fdfs_proto::scrub_msg::{ScrubAction, ScrubReport};

use super::{CmdError, Ctx};

pub(super) async fn handle(ctx: &Ctx, body: Vec<u8>) -> Result<Vec<u8>, CmdError> {
    let report: ScrubReport = match ScrubAction::decode(&body)? {
        ScrubAction::Status => ctx.scrub.report(),
        // on request: as fast as the disk reads
        ScrubAction::Start => ctx.scrub.start(None),
    };
    Ok(report.encode())
}
