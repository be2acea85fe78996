//! Parallel lanes to one peer, the I/O-free part: which lane a binlog record goes to, and the
//! window of records in flight, which decides how far the peer's mark may move.
//!
//! A lane is one sync connection with one request in flight. The receiver makes every
//! replica durable before it answers, so one lane is bounded by the peer's fsyncs; several
//! lanes let those overlap. Records are routed by a hash of the file they concern: every
//! change of one file, of its metadata sidecar (`<name>-m`, which a delete of the file
//! takes along) and of its slaves ([`file_key`]) goes through one lane, in binlog order, so
//! the per-file order a single connection gave is kept. Records of different files
//! commute: replay reads each file's current state ([`super::plan`]), and no record of one
//! file depends on another's.
//!
//! Two ops name two files: a slave link (its target, whose content the sync sends when the
//! peer lacks it, and which a later delete of the link removes too) and the rename of an
//! appender (the old name). When the two files hash to different lanes the record is a
//! *barrier*: it goes out only once every record before it is confirmed, and nothing after
//! it goes out before it is confirmed, exactly as with one connection.
//!
//! The mark moves only over the leading records that are confirmed ([`Window::pop_confirmed`]),
//! so after a crash replay starts at the first record some lane had not finished. Records
//! confirmed past it are sent again; receivers take them idempotently, as they take the
//! records a single connection sent between its last mark save and a crash.

use std::collections::VecDeque;

use super::binlog::Position;
use super::record::Op;

/// Where a record goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Through this lane, after the earlier records of that lane.
    Lane(usize),
    /// Through this lane, alone: nothing else in flight before or while it is.
    Barrier(usize),
}

impl Route {
    pub fn lane(self) -> usize {
        match self {
            Route::Lane(lane) | Route::Barrier(lane) => lane,
        }
    }
}

/// What a name is routed by: its family. A metadata sidecar (`<name>-m`) goes with its file
/// (every trailing `-m` is dropped, so a data file whose own name ends in `-m` still shares
/// its key with its sidecar), and a master with its slaves, which share its directory and
/// encoded characters (`Mxx/XX/YY/` and 27 more): a slave's replica never overtakes its
/// master's, and the receiver tells a slave shaped like a normal name by that master
/// (`Store::beside_its_master`). At worst a few files share a lane.
pub fn file_key(name: &str) -> &str {
    const FAMILY_LEN: usize = 10 + fdfs_proto::name::ENCODED_LEN;
    let mut key = name;
    while let Some(shorter) = key.strip_suffix("-m") {
        key = shorter;
    }
    key.get(..FAMILY_LEN).unwrap_or(key)
}

/// The lane of the file `name` belongs to, out of `lanes` (at least 1).
pub fn lane_of(name: &str, lanes: usize) -> usize {
    let lanes = lanes.max(1);
    crc32fast::hash(file_key(name).as_bytes()) as usize % lanes
}

/// The lane of a record, and whether it must go alone.
pub fn route(op: &Op, lanes: usize) -> Route {
    let lane = lane_of(op.name(), lanes);
    let other = match op {
        Op::Link { target, .. } => Some(target),
        Op::Rename { old, .. } => Some(old),
        _ => None,
    };
    match other {
        Some(other) if lane_of(other, lanes) != lane => Route::Barrier(lane),
        _ => Route::Lane(lane),
    }
}

/// A record handed to a lane and not yet at the front of the confirmed prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    /// Just after the record: where the mark goes once it and everything before is confirmed.
    pub after: Position,
    pub timestamp: u32,
    pub watermark: u32,
    /// `Some(skipped)` once its lane finished it.
    pub done: Option<bool>,
}

/// The records in flight to one peer, in binlog order, at most `capacity` of them.
#[derive(Debug)]
pub struct Window {
    entries: VecDeque<Entry>,
    capacity: usize,
    /// Sequence number of a barrier record in flight.
    barrier: Option<u64>,
}

impl Window {
    pub fn new(capacity: usize) -> Window {
        Window {
            entries: VecDeque::new(),
            capacity: capacity.max(1),
            barrier: None,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether reading further could lead anywhere now: room, and no barrier in flight.
    pub fn open(&self) -> bool {
        self.barrier.is_none() && self.entries.len() < self.capacity
    }

    /// Whether a record routed `route` may go out now.
    pub fn admits(&self, route: Route) -> bool {
        match route {
            Route::Lane(_) => self.open(),
            Route::Barrier(_) => self.barrier.is_none() && self.entries.is_empty(),
        }
    }

    /// Records that record `seq` went out (after [`Window::admits`] said it may). Sequence
    /// numbers must grow.
    pub fn push(
        &mut self,
        seq: u64,
        after: Position,
        timestamp: u32,
        watermark: u32,
        route: Route,
    ) {
        debug_assert!(self.admits(route), "record {seq} pushed while not admitted");
        debug_assert!(self.entries.back().is_none_or(|last| last.seq < seq));
        if matches!(route, Route::Barrier(_)) {
            self.barrier = Some(seq);
        }
        self.entries.push_back(Entry {
            seq,
            after,
            timestamp,
            watermark,
            done: None,
        });
    }

    /// A lane finished record `seq`. Unknown sequence numbers are ignored (false).
    pub fn confirm(&mut self, seq: u64, skipped: bool) -> bool {
        let Ok(index) = self.entries.binary_search_by_key(&seq, |e| e.seq) else {
            return false;
        };
        self.entries[index].done = Some(skipped);
        if self.barrier == Some(seq) {
            self.barrier = None;
        }
        true
    }

    /// The first record, once it and so every record before it is confirmed: the mark may
    /// move past it.
    pub fn pop_confirmed(&mut self) -> Option<Entry> {
        if self.entries.front()?.done.is_some() {
            self.entries.pop_front()
        } else {
            None
        }
    }

    /// Timestamp of the first record not confirmed yet.
    pub fn oldest_pending(&self) -> Option<u32> {
        self.entries
            .iter()
            .find(|e| e.done.is_none())
            .map(|e| e.timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pos(offset: u64) -> Position {
        Position { index: 0, offset }
    }

    #[test]
    fn a_file_and_its_sidecar_share_a_lane() {
        let name = "M00/00/00/fwAAH2sDbkqEb2TqAAAAADY6MCA662.txt";
        for lanes in 1..9 {
            let lane = lane_of(name, lanes);
            assert!(lane < lanes);
            assert_eq!(lane_of(&format!("{name}-m"), lanes), lane);
            // a name that itself ends in -m keeps its sidecar too
            let odd = "M00/00/00/fwAAH2sDbkqEb2TqAAAAADY6MCA6-m";
            assert_eq!(lane_of(&format!("{odd}-m"), lanes), lane_of(odd, lanes));
        }
        assert_eq!(file_key("a-m-m"), "a");
        assert_eq!(file_key("a"), "a");
        // a master and its slaves (and their sidecars) are one family
        let master = "M00/00/00/fwAAH2sDbkqEb2TqAAAAADY6MCA662.txt";
        for member in [
            "M00/00/00/fwAAH2sDbkqEb2TqAAAAADY6MCA6621234",
            "M00/00/00/fwAAH2sDbkqEb2TqAAAAADY6MCA662_150x150.jpg-m",
        ] {
            assert_eq!(file_key(member), file_key(master));
        }
        assert_ne!(
            file_key(master),
            file_key("M00/00/01/fwAAH2sDbkqEb2TqAAAAADY6MCA662.txt")
        );
        // the names spread over the lanes
        let used: std::collections::BTreeSet<usize> = (0..64)
            .map(|i| lane_of(&format!("M00/00/00/file{i}.bin"), 4))
            .collect();
        assert_eq!(used.len(), 4);
    }

    #[test]
    fn two_name_records_on_different_lanes_are_barriers() {
        let lanes = 4;
        let names: Vec<String> = (0..32).map(|i| format!("M00/00/00/f{i}")).collect();
        let (a, b) = names
            .iter()
            .flat_map(|a| names.iter().map(move |b| (a, b)))
            .find(|(a, b)| lane_of(a, lanes) != lane_of(b, lanes))
            .unwrap();
        let link = Op::Link {
            name: a.clone(),
            target: b.clone(),
        };
        assert_eq!(route(&link, lanes), Route::Barrier(lane_of(a, lanes)));
        let rename = Op::Rename {
            name: a.clone(),
            old: b.clone(),
        };
        assert_eq!(route(&rename, lanes), Route::Barrier(lane_of(a, lanes)));
        // one lane: nothing is a barrier
        assert_eq!(route(&link, 1), Route::Lane(0));
        let same = Op::Link {
            name: a.clone(),
            target: format!("{a}-m"),
        };
        assert_eq!(route(&same, lanes), Route::Lane(lane_of(a, lanes)));
    }

    #[test]
    fn the_mark_stops_at_the_first_unconfirmed_record() {
        let mut window = Window::new(8);
        for seq in 1..=4 {
            window.push(
                seq,
                pos(seq * 10),
                seq as u32,
                0,
                Route::Lane(seq as usize % 2),
            );
        }
        assert_eq!(window.oldest_pending(), Some(1));
        // later records confirmed first do not move the mark
        assert!(window.confirm(2, false));
        assert!(window.confirm(4, true));
        assert_eq!(window.pop_confirmed(), None);
        assert_eq!(window.oldest_pending(), Some(1));
        assert!(window.confirm(1, false));
        let moved: Vec<u64> = std::iter::from_fn(|| window.pop_confirmed())
            .map(|e| e.seq)
            .collect();
        assert_eq!(moved, [1, 2]);
        assert_eq!(window.oldest_pending(), Some(3));
        assert!(!window.confirm(99, false));
        assert!(window.confirm(3, false));
        let rest: Vec<(u64, Option<bool>)> = std::iter::from_fn(|| window.pop_confirmed())
            .map(|e| (e.seq, e.done))
            .collect();
        assert_eq!(rest, [(3, Some(false)), (4, Some(true))]);
        assert!(window.is_empty());
    }

    #[test]
    fn barriers_wait_for_an_empty_window_and_hold_everything_after() {
        let mut window = Window::new(4);
        window.push(1, pos(1), 0, 0, Route::Lane(0));
        assert!(!window.admits(Route::Barrier(1)));
        window.confirm(1, false);
        window.pop_confirmed();
        assert!(window.admits(Route::Barrier(1)));
        window.push(2, pos(2), 0, 0, Route::Barrier(1));
        assert!(!window.open());
        assert!(!window.admits(Route::Lane(0)));
        window.confirm(2, false);
        assert!(window.admits(Route::Lane(0)));
        assert_eq!(window.pop_confirmed().map(|e| e.seq), Some(2));
        // and the window's capacity bounds what is in flight
        for seq in 3..7 {
            window.push(seq, pos(seq), 0, 0, Route::Lane(0));
        }
        assert!(!window.open());
    }

    #[derive(Clone, Debug)]
    struct Rec {
        seq: u64,
        op: Op,
    }

    fn names() -> impl Strategy<Value = String> {
        (0u8..6, any::<bool>()).prop_map(|(i, sidecar)| {
            let base = format!("M00/00/00/file{i}");
            if sidecar {
                format!("{base}-m")
            } else {
                base
            }
        })
    }

    fn ops() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => names().prop_map(|name| Op::Create { name }),
            3 => names().prop_map(|name| Op::Delete { name }),
            3 => names().prop_map(|name| Op::Append { name, offset: 0, length: 1 }),
            1 => (names(), names()).prop_map(|(name, target)| Op::Link { name, target }),
            1 => (names(), names()).prop_map(|(name, old)| Op::Rename { name, old }),
        ]
    }

    /// The names a record's sync may touch.
    fn touched(op: &Op) -> Vec<&str> {
        match op {
            Op::Link { name, target } => vec![file_key(name), file_key(target)],
            Op::Rename { name, old } => vec![file_key(name), file_key(old)],
            other => vec![file_key(other.name())],
        }
    }

    proptest! {
        /// A dispatcher and lanes that start and finish records in any interleaving: a record
        /// starts only once every earlier record of the files it touches has finished (so
        /// per-file order holds and two records of one file never overlap), and the mark only
        /// ever covers records their lanes confirmed.
        #[test]
        fn any_interleaving_keeps_file_order_and_a_safe_mark(
            ops in proptest::collection::vec(ops(), 1..60),
            lanes in 1usize..5,
            capacity in 1usize..10,
            choices in proptest::collection::vec(any::<u16>(), 200),
        ) {
            let records: Vec<Rec> = ops.into_iter().enumerate()
                .map(|(i, op)| Rec { seq: i as u64 + 1, op })
                .collect();
            let mut window = Window::new(capacity);
            // per lane: records handed to it, and the one it is sending
            let mut queues: Vec<VecDeque<u64>> = vec![VecDeque::new(); lanes];
            let mut current: Vec<Option<u64>> = vec![None; lanes];
            let mut next = 0usize;
            let mut confirmed = std::collections::BTreeSet::new();
            let mut mark = 0u64;
            let mut choice = choices.into_iter().cycle();
            let mut steps = 0;
            while mark < records.len() as u64 {
                steps += 1;
                prop_assert!(steps < 10_000, "stuck");
                // every action that is possible now; one is picked
                let mut actions = Vec::new();
                if next < records.len() && window.admits(route(&records[next].op, lanes)) {
                    actions.push((0, 0));
                }
                for lane in 0..lanes {
                    match current[lane] {
                        None if !queues[lane].is_empty() => actions.push((1, lane)),
                        Some(_) => actions.push((2, lane)),
                        None => {}
                    }
                }
                prop_assert!(!actions.is_empty(), "nothing can happen");
                let pick = choice.next().unwrap() as usize % actions.len();
                match actions[pick] {
                    (0, _) => {
                        let rec = &records[next];
                        let r = route(&rec.op, lanes);
                        window.push(rec.seq, pos(rec.seq), 0, 0, r);
                        queues[r.lane()].push_back(rec.seq);
                        next += 1;
                    }
                    (1, lane) => {
                        let seq = queues[lane].pop_front().unwrap();
                        let rec = &records[seq as usize - 1];
                        for key in touched(&rec.op) {
                            for earlier in &records[..seq as usize - 1] {
                                if touched(&earlier.op).contains(&key) {
                                    prop_assert!(confirmed.contains(&earlier.seq),
                                        "{}: record {} started before {} finished", key, seq, earlier.seq);
                                }
                            }
                        }
                        current[lane] = Some(seq);
                    }
                    (_, lane) => {
                        let seq = current[lane].take().unwrap();
                        confirmed.insert(seq);
                        prop_assert!(window.confirm(seq, false));
                        while let Some(entry) = window.pop_confirmed() {
                            prop_assert_eq!(entry.seq, mark + 1, "the mark moves record by record");
                            mark = entry.seq;
                        }
                    }
                }
                // the mark never covers a record that is not confirmed
                prop_assert!((1..=mark).all(|s| confirmed.contains(&s)));
                prop_assert!(window.len() <= capacity);
            }
        }
    }
}
