//! `Store::states_after`: the walk a re-evaluation after a rules change
//! takes through a partition's customers, slice by slice.

mod common;

use cohort_store::{Batch, Store};
use common::*;

#[test]
fn states_after_walks_one_partition_in_key_order_slice_by_slice() {
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
        let (slice, complete) = store.states_after(3, &after, 2).expect("scan");
        for (customer, state) in &slice {
            assert_eq!(state.as_ref().expect("opens").to_vec(), vec![3u8], "{customer}: partition 3's state");
            seen.push(customer.clone());
        }
        if complete {
            break;
        }
        after = slice.last().expect("an incomplete slice is not empty").0.clone();
    }
    assert_eq!(seen, customers, "every customer of partition 3 once, in key order, none of 2's or 4's");
    // A position that is not a stored customer resumes at the next one.
    let names = |after: &str, p: u32| {
        let (slice, complete) = store.states_after(p, after, 10).expect("scan");
        (slice.into_iter().map(|(c, _)| c).collect::<Vec<String>>(), complete)
    };
    assert_eq!(names("bz", 3), (vec!["cem".into(), "dia".into()], true));
    assert_eq!(names("dia", 3), (vec![], true));
    assert_eq!(names("", 7), (vec![], true), "an unknown partition is empty");
}

/// The borrowing form hands the same customers and payloads, and an error
/// from its callback ends the scan there, returned as the inner error.
#[test]
fn for_states_after_stops_at_the_callbacks_first_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), &test_config()).expect("open");
    let customers = ["ana", "ben", "bo", "cem", "dia"];
    let states = customers.iter().map(|c| (c.to_string(), Some(c.as_bytes().to_vec().into()))).collect();
    store
        .commit(&Batch { partition: 1, states, meta: meta(&[(TOPIC, 10)], None), ..Batch::default() })
        .expect("commit");
    let mut seen = Vec::new();
    let complete = store
        .for_states_after(1, "ana", 10, |customer, payload| {
            assert_eq!(payload.expect("opens"), customer.as_bytes(), "{customer}'s own payload");
            seen.push(customer.to_owned());
            Ok::<(), String>(())
        })
        .expect("scan");
    assert_eq!(seen, ["ben", "bo", "cem", "dia"], "every customer after ana, in key order");
    assert_eq!(complete, Ok(true));
    let mut calls = 0;
    let stopped = store
        .for_states_after(1, "", 10, |customer, _| {
            calls += 1;
            if customer == "bo" {
                Err(format!("stop at {customer}"))
            } else {
                Ok(())
            }
        })
        .expect("scan");
    assert_eq!((stopped, calls), (Err("stop at bo".to_string()), 3), "no call after the error");
}
