//! The sync decision logic, free of I/O: for one binlog record and what the sending storage
//! holds now, which sync requests go to the peer and what each answer means (L.3, L.4).
//!
//! The sender's worker drives it: [`RecordSync::start`] with a [`Snapshot`] of the local
//! files, send each [`Step::Send`] request, feed the answer's status to
//! [`RecordSync::on_reply`], until [`Step::Done`] (move the cursor past the record) or
//! [`Step::Failed`] (retry the record later, or skip it when retrying cannot help).
//!
//! Replay reads the current state (L.3): a create sends today's content, a change of a file
//! that is gone is skipped, a delete of a file that exists again is skipped.

use fdfs_proto::status;

use super::record::{Op, Record};

/// What the sending storage has now under one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Local {
    Missing,
    File {
        size: u64,
        mtime: u32,
    },
    /// A symbolic link to another logical name (slave stored as a link).
    Link {
        target: String,
    },
}

/// The local state a record needs: its name, that name's metadata sidecar, and the other
/// name of a link (its target) or rename (the old name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub main: Local,
    /// Only a rename sends it; the driver may leave it `Missing` for other records.
    pub sidecar: Local,
    pub other: Local,
    /// The main file of a create record is a slave shaped like a normal name that carries
    /// the slave mark here (its size is not the one its name records): sent whole, without a
    /// probe, so that the request's slave flag reaches the peer and marks a copy it holds
    /// from before the marks. The driver looks only for create records.
    pub marked_slave: bool,
}

/// One sync request (L.4). Content, when there is some, is read by the driver from the local
/// file at the time it sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// SYNC_CREATE_FILE (16); `probe`: header only, asking whether the peer has it.
    Create {
        name: String,
        size: u64,
        mtime: u32,
        probe: bool,
    },
    /// SYNC_UPDATE_FILE (18): the whole file, replacing the peer's.
    Update { name: String, size: u64, mtime: u32 },
    /// SYNC_DELETE_FILE (17).
    Delete { name: String, timestamp: u32 },
    /// SYNC_CREATE_LINK (19).
    Link {
        name: String,
        target: String,
        timestamp: u32,
    },
    /// SYNC_APPEND_FILE (25).
    Append {
        name: String,
        offset: u64,
        length: u64,
        mtime: u32,
    },
    /// SYNC_MODIFY_FILE (35).
    Modify {
        name: String,
        offset: u64,
        length: u64,
        mtime: u32,
    },
    /// SYNC_TRUNCATE_FILE (37).
    Truncate {
        name: String,
        old_size: u64,
        new_size: u64,
        timestamp: u32,
    },
    /// SYNC_RENAME_FILE (40).
    Rename {
        name: String,
        old: String,
        timestamp: u32,
    },
}

/// How a record ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The peer applied the change.
    Applied,
    /// The peer already had it.
    AlreadyThere,
    /// Nothing to send (the reason is logged).
    Skipped(&'static str),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Send(Request),
    Done(Outcome),
    /// The peer refused with `status`. `retry`: the refusal may pass (busy, full disk, i/o
    /// error), so the record is tried again later; otherwise it is skipped and logged.
    Failed {
        status: u8,
        retry: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// A probe for the main file went out.
    Probe,
    /// The whole main file went out (create or update); the outcome is the answer.
    Whole,
    /// The record's own request went out.
    Direct,
    /// After an append/modify/truncate the peer could not apply: the whole file went out.
    WholeFallback,
    /// After a rename whose old name the peer lacks: the new file went out, the sidecar may
    /// follow.
    RenamedFile,
    /// The sidecar of a renamed file went out.
    RenamedSidecar,
    /// After a link whose target the peer lacks: the target went out.
    LinkTarget,
    /// An append, modify or truncate the peer said it did not need: a probe checks that its
    /// copy really is ours (same size and mtime); if not, the whole file follows.
    Verify,

    /// The link went out again.
    LinkAgain,
    Finished,
}

/// The exchange for one record.
#[derive(Clone, Debug)]
pub struct RecordSync {
    record: Record,
    local: Snapshot,
    stage: Stage,
    /// Files at least this big are probed before their content is sent.
    probe_min: u64,
}

/// Name of the metadata sidecar of `name` (I.3).
pub fn sidecar_name(name: &str) -> String {
    format!("{name}-m")
}

fn unexpected(status: u8) -> Step {
    // EINVAL means the peer will never take this request; anything else may pass
    Step::Failed {
        status,
        retry: status != status::EINVAL,
    }
}

impl RecordSync {
    pub fn start(record: Record, local: Snapshot, probe_min: u64) -> (RecordSync, Step) {
        let mut sync = RecordSync {
            record,
            local,
            stage: Stage::Direct,
            probe_min,
        };
        let step = sync.first_step();
        if matches!(step, Step::Done(_)) {
            sync.stage = Stage::Finished;
        }
        (sync, step)
    }

    pub fn record(&self) -> &Record {
        &self.record
    }

    /// Sends the whole of `name` as it is now (a create, probing first when large).
    fn send_whole(&mut self, name: &str, local: &Local, update: bool) -> Step {
        match local {
            Local::Missing => Step::Done(Outcome::Skipped("file no longer exists")),
            Local::Link { target } => {
                self.stage = Stage::Direct;
                Step::Send(Request::Link {
                    name: name.to_string(),
                    target: target.clone(),
                    timestamp: self.record.timestamp,
                })
            }
            &Local::File { size, mtime } => {
                if update {
                    self.stage = Stage::Whole;
                    Step::Send(Request::Update {
                        name: name.to_string(),
                        size,
                        mtime,
                    })
                } else {
                    let probe = size >= self.probe_min && size > 0 && !self.local.marked_slave;
                    self.stage = if probe { Stage::Probe } else { Stage::Whole };
                    Step::Send(Request::Create {
                        name: name.to_string(),
                        size,
                        mtime,
                        probe,
                    })
                }
            }
        }
    }

    fn first_step(&mut self) -> Step {
        let timestamp = self.record.timestamp;
        let main = self.local.main.clone();
        match self.record.op.clone() {
            Op::Create { name } => self.send_whole(&name, &main, false),
            Op::Update { name } => self.send_whole(&name, &main, true),
            Op::Delete { name } => match main {
                Local::Missing => Step::Send(Request::Delete { name, timestamp }),
                _ => Step::Done(Outcome::Skipped("file exists again")),
            },
            Op::Append {
                name,
                offset,
                length,
            }
            | Op::Modify {
                name,
                offset,
                length,
            } => match main {
                // bytes cut off since are not sent (a later truncate covers them); the rest
                // are, as they are now
                Local::File { size, mtime } if size > offset => {
                    let length = length.min(size - offset);
                    let request = if matches!(self.record.op, Op::Append { .. }) {
                        Request::Append {
                            name,
                            offset,
                            length,
                            mtime,
                        }
                    } else {
                        Request::Modify {
                            name,
                            offset,
                            length,
                            mtime,
                        }
                    };
                    Step::Send(request)
                }
                Local::File { .. } => Step::Done(Outcome::Skipped(
                    "the range was cut off since, a later record covers it",
                )),
                Local::Link { .. } => Step::Done(Outcome::Skipped("file is a link now")),
                Local::Missing => Step::Done(Outcome::Skipped("file no longer exists")),
            },
            Op::Truncate {
                name,
                old_size,
                new_size,
            } => match main {
                // The record is written before the cut: a file longer than the cut either grew
                // again since (later records say how) or was never cut (a kill in between);
                // only the whole file is right in both cases.
                Local::File { size, mtime } if size > new_size => {
                    self.stage = Stage::WholeFallback;
                    Step::Send(Request::Update { name, size, mtime })
                }
                Local::File { .. } => Step::Send(Request::Truncate {
                    name,
                    old_size,
                    new_size,
                    timestamp,
                }),
                Local::Link { .. } => Step::Done(Outcome::Skipped("file is a link now")),
                Local::Missing => Step::Done(Outcome::Skipped("file no longer exists")),
            },
            Op::Link { name, .. } => match main {
                Local::Link { target } => Step::Send(Request::Link {
                    name,
                    target,
                    timestamp,
                }),
                _ => Step::Done(Outcome::Skipped("link no longer exists")),
            },
            Op::Rename { name, old } => match (main, &self.local.other) {
                // The record is written before the new name appears: with the old name still
                // here, the rename never happened (a kill in between).
                (Local::Missing, Local::File { .. } | Local::Link { .. }) => {
                    Step::Done(Outcome::Skipped("the rename never happened"))
                }
                // Renamed, then gone: the peer's copy under the old name must go too (a later
                // delete of the new name cannot find it there).
                (Local::Missing, Local::Missing) => Step::Send(Request::Delete {
                    name: old,
                    timestamp,
                }),
                _ => Step::Send(Request::Rename {
                    name,
                    old,
                    timestamp,
                }),
            },
        }
    }

    /// The peer answered the last request with `status`.
    pub fn on_reply(&mut self, status: u8) -> Step {
        let step = self.next(status);
        if !matches!(step, Step::Send(_)) {
            self.stage = Stage::Finished;
        }
        step
    }

    fn next(&mut self, status: u8) -> Step {
        use status::{EEXIST, ENOENT, OK};
        let main_name = self.record.op.name().to_string();
        let main = self.local.main.clone();
        match self.stage {
            Stage::Finished => Step::Done(Outcome::Applied),
            Stage::Verify => match status {
                EEXIST => Step::Done(Outcome::AlreadyThere),
                ENOENT => match main {
                    Local::File { size, mtime } => {
                        self.stage = Stage::WholeFallback;
                        Step::Send(Request::Update {
                            name: main_name,
                            size,
                            mtime,
                        })
                    }
                    _ => Step::Done(Outcome::Skipped("file no longer exists")),
                },
                other => unexpected(other),
            },
            Stage::Probe => match status {
                EEXIST => Step::Done(Outcome::AlreadyThere),
                ENOENT => {
                    let Local::File { size, mtime } = main else {
                        return Step::Done(Outcome::Skipped("file no longer exists"));
                    };
                    self.stage = Stage::Whole;
                    Step::Send(Request::Create {
                        name: main_name,
                        size,
                        mtime,
                        probe: false,
                    })
                }
                other => unexpected(other),
            },
            Stage::Whole | Stage::WholeFallback | Stage::RenamedSidecar | Stage::LinkAgain => {
                match status {
                    OK => Step::Done(Outcome::Applied),
                    EEXIST => Step::Done(Outcome::AlreadyThere),
                    other => unexpected(other),
                }
            }
            Stage::RenamedFile => match status {
                OK | EEXIST => match self.local.sidecar.clone() {
                    Local::File { size, mtime } => {
                        self.stage = Stage::RenamedSidecar;
                        Step::Send(Request::Update {
                            name: sidecar_name(&main_name),
                            size,
                            mtime,
                        })
                    }
                    _ => Step::Done(Outcome::Applied),
                },
                other => unexpected(other),
            },
            Stage::LinkTarget => match status {
                OK | EEXIST => match main {
                    Local::Link { target } => {
                        self.stage = Stage::LinkAgain;
                        Step::Send(Request::Link {
                            name: main_name,
                            target,
                            timestamp: self.record.timestamp,
                        })
                    }
                    _ => Step::Done(Outcome::Applied),
                },
                other => unexpected(other),
            },
            Stage::Direct => self.direct_reply(status),
        }
    }

    fn direct_reply(&mut self, status: u8) -> Step {
        use status::{EEXIST, ENOENT, OK};
        let main_name = self.record.op.name().to_string();
        let main = self.local.main.clone();
        match (&self.record.op, status) {
            // the peer renamed (or had) its copy, but changes made before the rename may never
            // have reached it under the old name (they are skipped once the name is gone), and
            // an in-place change need not show in size or mtime (seconds): the renamed file
            // goes whole, once in its life
            (Op::Rename { .. }, OK | EEXIST) => match main {
                Local::File { size, mtime } => {
                    self.stage = Stage::RenamedFile;
                    Step::Send(Request::Update {
                        name: main_name,
                        size,
                        mtime,
                    })
                }
                _ => Step::Done(Outcome::Applied),
            },
            (_, OK) => Step::Done(Outcome::Applied),
            // a delete of something the peer does not have is done
            (Op::Delete { .. }, ENOENT) => Step::Done(Outcome::AlreadyThere),
            (Op::Delete { .. }, other) => unexpected(other),
            // "not needed" for a change of an appender: make sure the copies agree
            (Op::Append { .. } | Op::Modify { .. } | Op::Truncate { .. }, EEXIST) => match main {
                Local::File { size, mtime } => {
                    self.stage = Stage::Verify;
                    Step::Send(Request::Create {
                        name: main_name,
                        size,
                        mtime,
                        probe: true,
                    })
                }
                _ => Step::Done(Outcome::AlreadyThere),
            },
            (_, EEXIST) => Step::Done(Outcome::AlreadyThere),
            // the peer's copy is not where the change starts: send the whole file
            (Op::Append { .. } | Op::Modify { .. } | Op::Truncate { .. }, ENOENT) => match main {
                Local::File { size, mtime } => {
                    self.stage = Stage::WholeFallback;
                    Step::Send(Request::Update {
                        name: main_name,
                        size,
                        mtime,
                    })
                }
                _ => Step::Done(Outcome::Skipped("file no longer exists")),
            },
            // the peer lacks the old name: send the file under its new name
            (Op::Rename { .. }, ENOENT) => match main {
                Local::File { size, mtime } => {
                    self.stage = Stage::RenamedFile;
                    Step::Send(Request::Create {
                        name: main_name,
                        size,
                        mtime,
                        probe: false,
                    })
                }
                _ => Step::Done(Outcome::Skipped("renamed file no longer exists")),
            },
            // the peer lacks the link target: send it, then the link again
            (Op::Link { .. } | Op::Create { .. } | Op::Update { .. }, ENOENT)
                if matches!(main, Local::Link { .. }) =>
            {
                let Local::Link { target } = &main else {
                    unreachable!("matched above")
                };
                match self.local.other.clone() {
                    Local::File { size, mtime } => {
                        self.stage = Stage::LinkTarget;
                        Step::Send(Request::Create {
                            name: target.clone(),
                            size,
                            mtime,
                            probe: false,
                        })
                    }
                    _ => Step::Done(Outcome::Skipped("link target no longer exists")),
                }
            }
            (_, other) => unexpected(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "M00/00/00/fwAAH2sDbkqEb2TqAAAAADY6MCA662.txt";
    const OTHER: &str = "M00/00/00/fwAAH2sDbkmANIM3AAAACB9jffU662.txt";

    fn record(op: Op) -> Record {
        Record {
            seq: 1,
            timestamp: 100,
            watermark: 99,
            op,
        }
    }

    fn file(size: u64) -> Local {
        Local::File { size, mtime: 123 }
    }

    fn snapshot(main: Local) -> Snapshot {
        Snapshot {
            main,
            sidecar: Local::Missing,
            other: Local::Missing,
            marked_slave: false,
        }
    }

    fn create() -> Op {
        Op::Create { name: NAME.into() }
    }

    /// Runs a record against scripted answers; returns the requests sent and the end.
    fn run(op: Op, local: Snapshot, answers: &[u8]) -> (Vec<Request>, Step) {
        let (mut sync, mut step) = RecordSync::start(record(op), local, 1000);
        let mut sent = Vec::new();
        let mut answers = answers.iter();
        while let Step::Send(request) = step {
            sent.push(request);
            let answer = *answers.next().expect("an answer for every request");
            step = sync.on_reply(answer);
        }
        assert!(answers.next().is_none(), "unused answers");
        (sent, step)
    }

    #[test]
    fn a_marked_slave_goes_whole_unprobed() {
        let marked = Snapshot {
            marked_slave: true,
            ..snapshot(file(6000))
        };
        // unmarked (an ordinary file, damage, a slave from before the marks): the content
        // would carry no flag, so a probe settles it
        let (sent, _) = run(create(), snapshot(file(6000)), &[17]);
        assert!(matches!(sent[..], [Request::Create { probe: true, .. }]));
        // a marked slave: straight to the content, where the slave flag goes; a peer holding
        // it answers 17 all the same
        let (sent, end) = run(create(), marked, &[17]);
        assert_eq!(
            sent,
            [Request::Create {
                name: NAME.into(),
                size: 6000,
                mtime: 123,
                probe: false
            }]
        );
        assert_eq!(end, Step::Done(Outcome::AlreadyThere));
    }

    #[test]
    fn small_creates_go_whole_large_ones_are_probed() {
        let (sent, end) = run(create(), snapshot(file(10)), &[0]);
        assert_eq!(
            sent,
            [Request::Create {
                name: NAME.into(),
                size: 10,
                mtime: 123,
                probe: false
            }]
        );
        assert_eq!(end, Step::Done(Outcome::Applied));

        // the peer has it: one probe, no content
        let (sent, end) = run(create(), snapshot(file(5000)), &[17]);
        assert!(matches!(sent[..], [Request::Create { probe: true, .. }]));
        assert_eq!(end, Step::Done(Outcome::AlreadyThere));

        // the peer lacks it: probe, then content
        let (sent, end) = run(create(), snapshot(file(5000)), &[2, 0]);
        assert!(matches!(
            sent[..],
            [
                Request::Create { probe: true, .. },
                Request::Create {
                    probe: false,
                    size: 5000,
                    ..
                }
            ]
        ));
        assert_eq!(end, Step::Done(Outcome::Applied));

        // a full create of a file the peer already holds counts as done (L.4)
        let (_, end) = run(create(), snapshot(file(1)), &[17]);
        assert_eq!(end, Step::Done(Outcome::AlreadyThere));
    }

    #[test]
    fn changes_of_vanished_files_are_skipped_without_sending() {
        for op in [
            create(),
            Op::Update { name: NAME.into() },
            Op::Append {
                name: NAME.into(),
                offset: 0,
                length: 1,
            },
            Op::Modify {
                name: NAME.into(),
                offset: 0,
                length: 1,
            },
            Op::Truncate {
                name: NAME.into(),
                old_size: 2,
                new_size: 1,
            },
            Op::Link {
                name: NAME.into(),
                target: OTHER.into(),
            },
        ] {
            let (sent, end) = run(op.clone(), snapshot(Local::Missing), &[]);
            assert!(sent.is_empty(), "{op:?}");
            assert!(matches!(end, Step::Done(Outcome::Skipped(_))), "{op:?}");
        }
    }

    #[test]
    fn deletes() {
        let delete = Op::Delete { name: NAME.into() };
        let (sent, end) = run(delete.clone(), snapshot(Local::Missing), &[0]);
        assert_eq!(
            sent,
            [Request::Delete {
                name: NAME.into(),
                timestamp: 100
            }]
        );
        assert_eq!(end, Step::Done(Outcome::Applied));
        // the peer never had it
        let (_, end) = run(delete.clone(), snapshot(Local::Missing), &[2]);
        assert_eq!(end, Step::Done(Outcome::AlreadyThere));
        // the name exists again here (e.g. metadata set again): a later record covers it
        let (sent, end) = run(delete, snapshot(file(3)), &[]);
        assert!(sent.is_empty());
        assert!(matches!(end, Step::Done(Outcome::Skipped(_))));
    }

    #[test]
    fn appends_fall_back_to_the_whole_file() {
        let append = Op::Append {
            name: NAME.into(),
            offset: 6,
            length: 6,
        };
        let (sent, end) = run(append.clone(), snapshot(file(12)), &[0]);
        assert_eq!(
            sent,
            [Request::Append {
                name: NAME.into(),
                offset: 6,
                length: 6,
                mtime: 123
            }]
        );
        assert_eq!(end, Step::Done(Outcome::Applied));
        // the peer already has the bytes: a probe confirms its copy is ours
        let (sent, end) = run(append.clone(), snapshot(file(12)), &[17, 17]);
        assert_eq!(
            sent[1],
            Request::Create {
                name: NAME.into(),
                size: 12,
                mtime: 123,
                probe: true
            }
        );
        assert_eq!(end, Step::Done(Outcome::AlreadyThere));
        // ... or shows it is not: the whole file goes
        let (sent, end) = run(append.clone(), snapshot(file(12)), &[17, 2, 0]);
        assert!(matches!(sent[2], Request::Update { size: 12, .. }));
        assert_eq!(end, Step::Done(Outcome::Applied));
        // the peer's copy is shorter than the offset: whole file
        let (sent, end) = run(append.clone(), snapshot(file(20)), &[2, 0]);
        assert_eq!(
            sent[1],
            Request::Update {
                name: NAME.into(),
                size: 20,
                mtime: 123
            }
        );
        assert_eq!(end, Step::Done(Outcome::Applied));
        // the file was truncated into the range since: what is left of it goes
        let (sent, end) = run(append.clone(), snapshot(file(8)), &[0]);
        assert_eq!(
            sent,
            [Request::Append {
                name: NAME.into(),
                offset: 6,
                length: 2,
                mtime: 123
            }]
        );
        assert_eq!(end, Step::Done(Outcome::Applied));
        // ... and below it: nothing to send for this record
        let (sent, end) = run(append, snapshot(file(6)), &[]);
        assert!(sent.is_empty());
        assert!(matches!(end, Step::Done(Outcome::Skipped(_))));
        // modify behaves alike
        let modify = Op::Modify {
            name: NAME.into(),
            offset: 0,
            length: 5,
        };
        let (sent, _) = run(modify, snapshot(file(12)), &[2, 0]);
        assert!(matches!(
            sent[..],
            [Request::Modify { .. }, Request::Update { size: 12, .. }]
        ));
    }

    #[test]
    fn truncates() {
        let truncate = Op::Truncate {
            name: NAME.into(),
            old_size: 15,
            new_size: 8,
        };
        let (sent, end) = run(truncate.clone(), snapshot(file(8)), &[0]);
        assert_eq!(
            sent,
            [Request::Truncate {
                name: NAME.into(),
                old_size: 15,
                new_size: 8,
                timestamp: 100
            }]
        );
        assert_eq!(end, Step::Done(Outcome::Applied));
        // the peer is cut already (and its copy is ours)
        let (_, end) = run(truncate.clone(), snapshot(file(8)), &[17, 17]);
        assert_eq!(end, Step::Done(Outcome::AlreadyThere));
        // the peer lacks the file
        let (sent, end) = run(truncate.clone(), snapshot(file(8)), &[2, 0]);
        assert!(matches!(sent[1], Request::Update { size: 8, .. }));
        assert_eq!(end, Step::Done(Outcome::Applied));
        // longer than the cut here: never cut (a kill after the record) or grown since;
        // cutting the peer's copy could make it shorter than ours, the whole file cannot
        let (sent, end) = run(truncate, snapshot(file(15)), &[0]);
        assert!(matches!(sent[..], [Request::Update { size: 15, .. }]));
        assert_eq!(end, Step::Done(Outcome::Applied));
    }

    #[test]
    fn renames_send_the_renamed_file_whole_with_its_sidecar() {
        let rename = Op::Rename {
            name: NAME.into(),
            old: OTHER.into(),
        };
        let whole = Request::Update {
            name: NAME.into(),
            size: 12,
            mtime: 123,
        };
        // renamed there, then the content as it is here (in-place changes before the rename
        // may not have reached the old name)
        let (sent, end) = run(rename.clone(), snapshot(file(12)), &[0, 0]);
        assert_eq!(
            sent,
            [
                Request::Rename {
                    name: NAME.into(),
                    old: OTHER.into(),
                    timestamp: 100
                },
                whole.clone()
            ]
        );
        assert_eq!(end, Step::Done(Outcome::Applied));
        let (sent, _) = run(rename.clone(), snapshot(file(12)), &[17, 0]);
        assert_eq!(sent[1], whole);
        // with metadata, the sidecar follows
        let local = Snapshot {
            main: file(12),
            sidecar: Local::File { size: 9, mtime: 5 },
            other: Local::Missing,
            marked_slave: false,
        };
        let sidecar = Request::Update {
            name: format!("{NAME}-m"),
            size: 9,
            mtime: 5,
        };
        let (sent, end) = run(rename.clone(), local.clone(), &[0, 0, 0]);
        assert_eq!(sent[1..], [whole.clone(), sidecar.clone()]);
        assert_eq!(end, Step::Done(Outcome::Applied));
        // the peer lacks the old name: the file is created under the new one
        let (sent, end) = run(rename.clone(), local, &[2, 0, 0]);
        assert_eq!(
            sent[1..],
            [
                Request::Create {
                    name: NAME.into(),
                    size: 12,
                    mtime: 123,
                    probe: false
                },
                sidecar
            ]
        );
        assert_eq!(end, Step::Done(Outcome::Applied));
        // renamed, then deleted: the peer's old name goes (the delete of the new name that
        // follows cannot find it there)
        let (sent, end) = run(rename.clone(), snapshot(Local::Missing), &[0]);
        assert_eq!(
            sent,
            [Request::Delete {
                name: OTHER.into(),
                timestamp: 100
            }]
        );
        assert_eq!(end, Step::Done(Outcome::Applied));
        let (_, end) = run(rename.clone(), snapshot(Local::Missing), &[2]);
        assert!(matches!(end, Step::Done(Outcome::Skipped(_))));
        // recorded, but killed before the new name appeared: the old one is still here
        let never = Snapshot {
            main: Local::Missing,
            sidecar: Local::Missing,
            other: file(12),
            marked_slave: false,
        };
        let (sent, end) = run(rename, never, &[]);
        assert!(sent.is_empty());
        assert!(matches!(end, Step::Done(Outcome::Skipped(_))));
    }

    #[test]
    fn links_send_their_target_when_the_peer_lacks_it() {
        let link = Op::Link {
            name: NAME.into(),
            target: OTHER.into(),
        };
        let local = Snapshot {
            main: Local::Link {
                target: OTHER.into(),
            },
            sidecar: Local::Missing,
            other: file(4),
            marked_slave: false,
        };
        let (sent, end) = run(link.clone(), local.clone(), &[0]);
        assert_eq!(
            sent,
            [Request::Link {
                name: NAME.into(),
                target: OTHER.into(),
                timestamp: 100
            }]
        );
        assert_eq!(end, Step::Done(Outcome::Applied));
        let (sent, end) = run(link.clone(), local.clone(), &[2, 0, 0]);
        assert_eq!(
            sent[1],
            Request::Create {
                name: OTHER.into(),
                size: 4,
                mtime: 123,
                probe: false
            }
        );
        assert!(matches!(sent[2], Request::Link { .. }));
        assert_eq!(end, Step::Done(Outcome::Applied));
        // a create record of a name that is a link here sends the link
        let (sent, _) = run(create(), local, &[0]);
        assert!(matches!(sent[..], [Request::Link { .. }]));
    }

    #[test]
    fn refusals_are_retried_unless_hopeless() {
        let (_, end) = run(create(), snapshot(file(1)), &[28]);
        assert_eq!(
            end,
            Step::Failed {
                status: 28,
                retry: true
            }
        );
        let (_, end) = run(create(), snapshot(file(1)), &[16]);
        assert_eq!(
            end,
            Step::Failed {
                status: 16,
                retry: true
            }
        );
        let (_, end) = run(create(), snapshot(file(1)), &[22]);
        assert_eq!(
            end,
            Step::Failed {
                status: 22,
                retry: false
            }
        );
        let (_, end) = run(
            Op::Delete { name: NAME.into() },
            snapshot(Local::Missing),
            &[5],
        );
        assert_eq!(
            end,
            Step::Failed {
                status: 5,
                retry: true
            }
        );
    }

    proptest::proptest! {
        /// Whatever the peer answers, an exchange ends within a few requests and never sends
        /// content for a file the sender does not have.
        #[test]
        fn every_exchange_terminates(
            op_kind in 0usize..8,
            main_kind in 0usize..3,
            answers in proptest::collection::vec(proptest::sample::select(vec![0u8, 2, 5, 16, 17, 22, 28]), 6),
        ) {
            let op = match op_kind {
                0 => create(),
                1 => Op::Update { name: NAME.into() },
                2 => Op::Delete { name: NAME.into() },
                3 => Op::Append { name: NAME.into(), offset: 1, length: 1 },
                4 => Op::Modify { name: NAME.into(), offset: 1, length: 1 },
                5 => Op::Truncate { name: NAME.into(), old_size: 3, new_size: 1 },
                6 => Op::Link { name: NAME.into(), target: OTHER.into() },
                _ => Op::Rename { name: NAME.into(), old: OTHER.into() },
            };
            let main = match main_kind {
                0 => Local::Missing,
                1 => file(5000),
                _ => Local::Link { target: OTHER.into() },
            };
            let local = Snapshot {
                main: main.clone(),
                sidecar: file(3),
                other: file(2),
                marked_slave: false,
            };
            let (mut sync, mut step) = RecordSync::start(record(op), local, 1000);
            let mut sent = 0;
            for answer in &answers {
                let Step::Send(request) = &step else { break };
                if let Request::Create { name, probe: false, .. } | Request::Update { name, .. } = request {
                    // content only ever comes from a file we hold
                    let from_file = matches!(main, Local::File { .. });
                    proptest::prop_assert!(name != NAME || from_file);
                }
                sent += 1;
                step = sync.on_reply(*answer);
            }
            proptest::prop_assert!(!matches!(step, Step::Send(_)), "still sending after {} requests", sent);
        }
    }
}
