//! `Store::customers_after`: the walk a re-evaluation after a rules change
//! takes through a partition's customers, slice by slice.

mod common;

use cohort_store::{Batch, Store};
use common::*;

#[test]
fn customers_after_walks_one_partition_in_key_order_slice_by_slice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), &test_config()).expect("open");
    let customers = ["ana", "ben", "bo", "cem", "dia"];
    for p in [2, 3, 4] {
        let states = customers.iter().map(|c| (c.to_string(), Some(vec![p as u8].into()))).collect();
        store
            .commit(&Batch { partition: p, states, meta: meta(&[(TOPIC, 10)], None), ..Batch::default() })
            .expect("commit");
    }
    // Slices of two from the start: each resumes after the last one's end.
    let mut after = String::new();
    let mut seen = Vec::new();
    loop {
        let (slice, complete) = store.customers_after(3, &after, 2).expect("scan");
        seen.extend(slice.iter().cloned());
        if complete {
            break;
        }
        after = slice.last().expect("an incomplete slice is not empty").clone();
    }
    assert_eq!(seen, customers, "every customer of partition 3 once, in key order, none of 2's or 4's");
    // A position that is not a stored customer resumes at the next one.
    assert_eq!(store.customers_after(3, "bz", 10).expect("scan"), (vec!["cem".into(), "dia".into()], true));
    assert_eq!(store.customers_after(3, "dia", 10).expect("scan"), (vec![], true));
    assert_eq!(store.customers_after(7, "", 10).expect("scan"), (vec![], true), "an unknown partition is empty");
}
