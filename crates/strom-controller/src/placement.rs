//! Replica placement for new partitions, as Kafka's assignor does it: the first replica (the
//! preferred leader) of consecutive partitions walks round the brokers, and the followers
//! are placed at a shift from it that changes every round, so leaders and followers both
//! spread evenly. With racks, the broker list alternates racks first, so the replicas of one
//! partition land on different racks whenever there are enough of them.

use std::collections::BTreeMap;

use strom_metadata::image::BrokerImage;

/// Why replicas cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("replication factor {rf} is larger than the {live} available brokers")]
    NotEnoughBrokers { rf: i16, live: usize },
    #[error("replication factor must be 1 or more, got {0}")]
    BadReplicationFactor(i16),
}

/// The brokers in placement order, with their racks: by id, and with racks, interleaved
/// rack by rack.
fn placement_order<'a>(brokers: &[&'a BrokerImage]) -> Vec<(i32, &'a str)> {
    let rack = |b: &'a BrokerImage| b.rack.as_deref().unwrap_or("");
    if brokers.iter().all(|b| b.rack.is_none()) {
        let mut ids: Vec<(i32, &str)> = brokers.iter().map(|b| (b.id, "")).collect();
        ids.sort_unstable();
        return ids;
    }
    let mut by_rack: BTreeMap<&str, Vec<(i32, &str)>> = BTreeMap::new();
    for b in brokers {
        by_rack.entry(rack(b)).or_default().push((b.id, rack(b)));
    }
    by_rack.values_mut().for_each(|v| v.sort_unstable());
    let mut out = Vec::with_capacity(brokers.len());
    for round in 0.. {
        let before = out.len();
        out.extend(by_rack.values().filter_map(|ids| ids.get(round)));
        if out.len() == before {
            break;
        }
    }
    out
}

/// Replica lists for partitions `first_partition..first_partition + count` over `brokers`
/// (the unfenced ones). `start` rotates where the first partition's leader lands.
pub fn assign(
    brokers: &[&BrokerImage],
    first_partition: i32,
    count: i32,
    rf: i16,
    start: usize,
) -> Result<Vec<Vec<i32>>, PlacementError> {
    if rf < 1 {
        return Err(PlacementError::BadReplicationFactor(rf));
    }
    let order = placement_order(brokers);
    let n = order.len();
    if rf as usize > n {
        return Err(PlacementError::NotEnoughBrokers { rf, live: n });
    }
    let mut out = Vec::with_capacity(count.max(0) as usize);
    for i in 0..count.max(0) as usize {
        let p = first_partition as usize + i;
        let first = (start + p) % n;
        let mut replicas = vec![order[first].0];
        let mut racks_used = vec![order[first].1];
        if n > 1 {
            let round_shift = (p / n) % (n - 1);
            for j in 0..(rf as usize - 1) {
                let shift = 1 + (round_shift + j) % (n - 1);
                // Walk on from the shifted position to the first broker not yet chosen,
                // preferring one on a rack this partition does not use yet.
                let candidates =
                    (0..n).map(|k| order[(first + shift + k) % n]).filter(|(id, _)| !replicas.contains(id));
                let pick = candidates
                    .clone()
                    .find(|(_, rack)| !racks_used.contains(rack))
                    .or_else(|| candidates.clone().next());
                if let Some((id, rack)) = pick {
                    replicas.push(id);
                    racks_used.push(rack);
                }
            }
        }
        debug_assert_eq!(
            replicas.iter().collect::<std::collections::BTreeSet<_>>().len(),
            replicas.len(),
            "replicas of one partition are distinct"
        );
        out.push(replicas);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: i32, rack: Option<&str>) -> BrokerImage {
        BrokerImage {
            id,
            epoch: 0,
            incarnation_id: String::new(),
            listeners: vec![],
            rack: rack.map(str::to_string),
            fenced: false,
        }
    }

    #[test]
    fn leaders_and_replicas_spread_evenly() {
        let bs: Vec<BrokerImage> = (1..=3).map(|i| broker(i, None)).collect();
        let refs: Vec<&BrokerImage> = bs.iter().collect();
        let a = assign(&refs, 0, 6, 3, 0).unwrap();
        let mut leaders = BTreeMap::new();
        let mut replicas = BTreeMap::new();
        for r in &a {
            *leaders.entry(r[0]).or_insert(0) += 1;
            for b in r {
                *replicas.entry(*b).or_insert(0) += 1;
            }
            assert_eq!(r.len(), 3);
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        assert_eq!(replicas.values().copied().collect::<Vec<_>>(), vec![6, 6, 6]);
    }

    #[test]
    fn racks_are_spread_before_brokers_repeat_a_rack() {
        let bs = [broker(1, Some("a")), broker(2, Some("a")), broker(3, Some("b")), broker(4, Some("b"))];
        let refs: Vec<&BrokerImage> = bs.iter().collect();
        let racks = |id: i32| bs.iter().find(|b| b.id == id).unwrap().rack.clone();
        for r in assign(&refs, 0, 8, 2, 0).unwrap() {
            assert_ne!(racks(r[0]), racks(r[1]), "{r:?}");
        }
    }

    #[test]
    fn a_replication_factor_above_the_live_brokers_is_refused() {
        let bs = [broker(1, None)];
        let refs: Vec<&BrokerImage> = bs.iter().collect();
        assert_eq!(assign(&refs, 0, 1, 3, 0), Err(PlacementError::NotEnoughBrokers { rf: 3, live: 1 }));
        assert_eq!(assign(&refs, 0, 1, 0, 0), Err(PlacementError::BadReplicationFactor(0)));
    }
}
