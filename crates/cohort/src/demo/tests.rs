use super::args::*;
use super::*;

#[test]
fn speeds_and_durations_parse() {
    assert_eq!(parse_speed("3d").unwrap(), Speed(259_200.0));
    assert_eq!(parse_speed("3600x").unwrap(), Speed(3_600.0));
    assert_eq!(parse_speed("1h").unwrap(), Speed(3_600.0));
    assert!(parse_speed("0x").is_err());
    assert!(parse_speed("fast").is_err());
    assert_eq!(parse_wall_duration("20s").unwrap(), Duration::from_secs(20));
    assert_eq!(parse_wall_duration("1.5m").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_wall_duration("0").unwrap(), Duration::ZERO);
    assert!(parse_wall_duration("20").unwrap_err().contains("unit"));
    assert_eq!(parse_sim_duration("10d").unwrap(), SimDuration::from_days(10));
    assert_eq!(Speed(259_200.0).to_string(), "3 days per second (259,200x)");
}

#[test]
fn the_accelerated_clock_is_frozen_until_started_then_runs_fast() {
    let c = AccelClock::new(Timestamp(1_000_000), 1_000.0);
    assert_eq!(c.now(), Timestamp(1_000_000));
    assert!(c.wall_at(Timestamp(2_000_000)).is_none());
    let w0 = c.start();
    std::thread::sleep(Duration::from_millis(20));
    assert!(c.now().as_millis() >= 1_000_000 + 20_000);
    assert_eq!(c.wall_at(Timestamp(1_000_000)), Some(w0));
    assert_eq!(c.wall_at(Timestamp(2_000_000)), Some(w0 + Duration::from_secs(1)));
}

#[test]
fn formatting() {
    assert_eq!(group_digits(1_234_567), "1,234,567");
    assert_eq!(group_digits(12), "12");
    assert_eq!(percentile(&[5.0, 1.0, 3.0, 2.0, 4.0], 0.5), Some(3.0));
    assert_eq!(percentile(&[5.0, 1.0, 3.0, 2.0, 4.0], 0.99), Some(5.0));
    assert_eq!(percentile(&[], 0.5), None);
    assert_eq!(
        fmt_sim(cohort_core::time::timestamp_of_date(2025, 3, 14) + SimDuration::from_hours(6)),
        "2025-03-14 06:00"
    );
    assert_eq!(holdout_pct(95.0, 5.0), "5.0%");
}
