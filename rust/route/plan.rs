//! What a reconfiguration changes, worked out before anything changes: pure, and unit-tested.
//!
//! Inputs and outputs are matched by id. One whose endpoint (or standby) changed is removed and
//! added again; one the route has and the spec does not is removed; one the spec has and the
//! route does not is added. Kept ones keep their place, added ones come after them in the
//! spec's order, and if the spec orders the inputs otherwise the plan says how.

use crate::uri::Endpoint;

/// An input or output as the route has it or a spec wants it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry<'a> {
    pub id: &'a str,
    pub endpoint: &'a Endpoint,
    pub cold: bool,
}

impl<'a> From<(&'a str, &'a Endpoint, bool)> for Entry<'a> {
    fn from((id, endpoint, cold): (&'a str, &'a Endpoint, bool)) -> Self {
        Entry { id, endpoint, cold }
    }
}

impl Entry<'_> {
    fn same(&self, other: &Entry<'_>) -> bool {
        self.id == other.id && self.endpoint == other.endpoint && self.cold == other.cold
    }
}

/// What to change on one side (inputs or outputs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct SidePlan {
    /// Ids to stop and remove, in the route's order.
    pub remove: Vec<String>,
    /// Positions in the wanted list of the entries to add, in the spec's order.
    pub add: Vec<usize>,
}

/// What `Route::reconfigure` does: outputs, then inputs, then the inputs' order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Plan {
    pub outputs: SidePlan,
    pub inputs: SidePlan,
    /// The inputs' priority order once removals and additions are made, when it is not the
    /// order they then stand in: `order[new] = old` (the switch's `reorder` takes the same).
    pub order: Option<Vec<usize>>,
}

/// Works out how to go from the route's `current` inputs and outputs to the `wanted` ones.
pub(super) fn plan(
    current_inputs: &[Entry<'_>],
    current_outputs: &[Entry<'_>],
    wanted_inputs: &[Entry<'_>],
    wanted_outputs: &[Entry<'_>],
) -> Plan {
    let inputs = side(current_inputs, wanted_inputs);
    // The inputs as they stand after the edits: the kept ones, then the added ones.
    let after: Vec<&str> = current_inputs
        .iter()
        .map(|e| e.id)
        .filter(|id| !inputs.remove.iter().any(|r| r == id))
        .chain(inputs.add.iter().map(|&w| wanted_inputs[w].id))
        .collect();
    let order: Vec<usize> = wanted_inputs
        .iter()
        .filter_map(|w| after.iter().position(|&id| id == w.id))
        .collect();
    let moved = order.iter().enumerate().any(|(n, &o)| n != o) && order.len() == after.len();
    Plan {
        outputs: side(current_outputs, wanted_outputs),
        inputs,
        order: moved.then_some(order),
    }
}

fn side(current: &[Entry<'_>], wanted: &[Entry<'_>]) -> SidePlan {
    let kept = |c: &Entry<'_>| wanted.iter().any(|w| w.same(c));
    let remove: Vec<String> = current
        .iter()
        .filter(|c| !kept(c))
        .map(|c| c.id.to_string())
        .collect();
    let add = wanted
        .iter()
        .enumerate()
        .filter(|(_, w)| !current.iter().any(|c| c.id == w.id && kept(c)))
        .map(|(n, _)| n)
        .collect();
    SidePlan { remove, add }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::spec::{Checked, InputSpec, OutputSpec, RouteSpec, Wanted};
    use crate::uri::Role;

    fn udp(port: u16) -> Endpoint {
        Endpoint::parse(&format!("udp://127.0.0.1:{port}"), Role::Output).unwrap()
    }

    /// Entries with the given ids and ports (a port of 0 means `cold`, on port 1).
    fn owned(list: &[(&str, u16)]) -> Vec<(String, Endpoint, bool)> {
        list.iter()
            .map(|&(id, port)| (id.to_string(), udp(port.max(1)), port == 0))
            .collect()
    }

    fn entries(v: &[(String, Endpoint, bool)]) -> Vec<Entry<'_>> {
        v.iter()
            .map(|(id, endpoint, cold)| Entry::from((id.as_str(), endpoint, *cold)))
            .collect()
    }

    fn plan_inputs(current: &[(&str, u16)], wanted: &[(&str, u16)]) -> Plan {
        let (c, w) = (owned(current), owned(wanted));
        plan(&entries(&c), &[], &entries(&w), &[])
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_same_spec_changes_nothing() {
        let list = [("a", 5000), ("b", 5001)];
        assert_eq!(plan_inputs(&list, &list), Plan::default());
    }

    #[test]
    fn inputs_and_outputs_are_matched_by_id() {
        let (c_in, c_out) = (owned(&[("a", 5000)]), owned(&[("x", 6000), ("y", 6001)]));
        let (w_in, w_out) = (owned(&[("a", 5000)]), owned(&[("y", 6001), ("z", 6002)]));
        let p = plan(
            &entries(&c_in),
            &entries(&c_out),
            &entries(&w_in),
            &entries(&w_out),
        );
        assert_eq!(p.inputs, SidePlan::default());
        assert_eq!(p.outputs.remove, ids(&["x"]));
        // `z` is the second wanted output.
        assert_eq!(p.outputs.add, vec![1]);
        assert_eq!(p.order, None);
    }

    #[test]
    fn a_changed_endpoint_is_removed_and_added_again() {
        let p = plan_inputs(&[("a", 5000), ("b", 5001)], &[("a", 5000), ("b", 5009)]);
        assert_eq!(p.inputs.remove, ids(&["b"]));
        assert_eq!(p.inputs.add, vec![1]);
        assert_eq!(p.order, None);
    }

    #[test]
    fn a_changed_standby_is_removed_and_added_again() {
        // Port 0 marks `cold` (on port 1).
        let p = plan_inputs(&[("a", 5000), ("b", 1)], &[("a", 5000), ("b", 0)]);
        assert_eq!(p.inputs.remove, ids(&["b"]));
        assert_eq!(p.inputs.add, vec![1]);
    }

    #[test]
    fn a_new_priority_order_is_a_reorder_not_a_restart() {
        let p = plan_inputs(
            &[("a", 5000), ("b", 5001), ("c", 5002)],
            &[("c", 5002), ("a", 5000), ("b", 5001)],
        );
        assert_eq!(p.inputs, SidePlan::default());
        assert_eq!(p.order, Some(vec![2, 0, 1]));
    }

    #[test]
    fn added_inputs_come_last_unless_the_spec_puts_them_before() {
        // Appended in the spec's order: nothing to reorder.
        let p = plan_inputs(&[("a", 5000)], &[("a", 5000), ("b", 5001)]);
        assert_eq!(p.inputs.add, vec![1]);
        assert_eq!(p.order, None);
        // Put first by the spec: after the addition `b` stands at 1 and must move to 0.
        let p = plan_inputs(&[("a", 5000)], &[("b", 5001), ("a", 5000)]);
        assert_eq!(p.inputs.add, vec![0]);
        assert_eq!(p.order, Some(vec![1, 0]));
    }

    #[test]
    fn a_changed_input_goes_to_the_end_and_is_moved_back() {
        // `a` changes: removed, added after `b`, then put first again.
        let p = plan_inputs(&[("a", 5000), ("b", 5001)], &[("a", 5009), ("b", 5001)]);
        assert_eq!(p.inputs.remove, ids(&["a"]));
        assert_eq!(p.inputs.add, vec![0]);
        assert_eq!(p.order, Some(vec![1, 0]));
    }

    #[test]
    fn removals_keep_the_order_of_what_stays() {
        let p = plan_inputs(
            &[("a", 5000), ("b", 5001), ("c", 5002)],
            &[("a", 5000), ("c", 5002)],
        );
        assert_eq!(p.inputs.remove, ids(&["b"]));
        assert!(p.inputs.add.is_empty());
        assert_eq!(p.order, None);
    }

    /// A spec whose entries have no ids gets `in0…`/`out0…`, as at creation, so it matches
    /// the route it created.
    #[test]
    fn entries_without_ids_match_the_auto_ids_of_the_route() {
        let spec = |outputs: &[&str]| RouteSpec {
            name: "r".into(),
            inputs: vec![
                InputSpec {
                    uri: "udp://127.0.0.1:5000".into(),
                    id: Some("in0".into()),
                },
                InputSpec {
                    uri: "udp://127.0.0.1:5001".into(),
                    id: None,
                },
            ],
            outputs: outputs
                .iter()
                .map(|uri| OutputSpec {
                    uri: uri.to_string(),
                    id: None,
                })
                .collect(),
            ..RouteSpec::default()
        };
        let first = Checked::new(&spec(&["udp://127.0.0.1:6000"])).unwrap();
        // `in0` is taken by the first input: the second gets `in1`.
        let in_ids: Vec<&str> = first.inputs.iter().map(|w| w.id.as_str()).collect();
        assert_eq!(in_ids, ["in0", "in1"]);
        assert_eq!(first.outputs[0].id, "out0");
        let second =
            Checked::new(&spec(&["udp://127.0.0.1:6000", "udp://127.0.0.1:6001"])).unwrap();
        let e = |v: &[Wanted]| -> Vec<(String, Endpoint, bool)> {
            v.iter()
                .map(|w| (w.id.clone(), w.endpoint.clone(), w.cold))
                .collect()
        };
        let (ci, co, wi, wo) = (
            e(&first.inputs),
            e(&first.outputs),
            e(&second.inputs),
            e(&second.outputs),
        );
        let p = plan(&entries(&ci), &entries(&co), &entries(&wi), &entries(&wo));
        assert_eq!(p.outputs.remove, Vec::<String>::new());
        assert_eq!(p.outputs.add, vec![1]);
        assert_eq!(second.outputs[1].id, "out1");
        assert_eq!(p.inputs, SidePlan::default());
        assert_eq!(p.order, None);
    }
}
