use super::*;

fn at(text: &str) -> Timestamp {
    text.parse().expect("test timestamp")
}

fn schedule(text: &str) -> BackupSchedule {
    parse_backup_schedule(text).expect("test schedule")
}

#[test]
fn parses_five_fields_and_the_documented_nicknames() {
    for text in [
        "0 2 * * *",
        "30 3 * * 1-5",
        "0 4 1 * *",
        "15 */6 * * *",
        "0 1 * * SUN",
        "0 0 1 JAN *",
        "  0 2 * * *  ",
        "@hourly",
        "@daily",
        "@weekly",
        "@monthly",
        "@DAILY",
        "0 2 * * MON-FRI",
        "0 2 * JAN-MAR *",
        "0 2 * * sun",
        "0 2 * * 7",
        "0 2 1-31/7 1-12/3 *",
    ] {
        assert!(parse_backup_schedule(text).is_ok(), "{text}");
    }
    assert_eq!(schedule(" 0 2 * * * ").as_str(), "0 2 * * *");
}

#[test]
fn refuses_garbage_with_a_precise_message() {
    let cases: &[(&str, &str)] = &[
        ("", "empty"),
        (
            ",,,, * * * *",
            "minute field `,,,,`: has an empty list item",
        ),
        ("0 2 L * *", "day-of-month field `L`"),
        ("0 2 * * 5#3", "day-of-week field `5#3`"),
        ("0 2 ? * *", "day-of-month field `?`"),
        ("0 2 * * +1", "day-of-week field `+1`"),
        ("0 2 * * SUNDAY", "three-letter names"),
        ("0 JAN * * *", "hour field `JAN`"),
        ("0 5-2 * * *", "not a valid cron schedule"),
        ("   ", "empty"),
        ("@reboot", "not a supported nickname"),
        ("@yearly", "not a supported nickname"),
        ("0 2 * *", "has 4 field(s)"),
        ("0 0 2 * * *", "has 6 field(s)"),
        ("0 0 2 * * * 2030", "has 7 field(s)"),
        ("61 2 * * *", "not a valid cron schedule"),
        ("0 25 * * *", "not a valid cron schedule"),
        ("a b c d e", "not a valid cron schedule"),
        ("0 2 * * FUNDAY", "not a valid cron schedule"),
        ("0 2 32 * *", "not a valid cron schedule"),
        ("*/0 * * * *", "not a valid cron schedule"),
    ];
    for (text, expected) in cases {
        let message = parse_backup_schedule(text).expect_err(text).to_string();
        assert!(message.contains(expected), "{text}: {message}");
    }
}

#[test]
fn never_panics_on_hostile_text() {
    let hostile = [
        "* * * * * * * * *",
        "0-0-0 * * * *",
        "*/0 * * * *",
        "0 2 L * *",
        "0 2 * * 5#9",
        "0 2 ? ? ?",
        "0 2 * * +",
        "-1 2 * * *",
        "0 2 * * 8",
        "0 2 W * *",
        "99999999999999999999 * * * *",
        "0 2 1-31/7 1-12/13 *",
        "\u{0}\u{1} 2 * * *",
        "ß 2 * * *",
        "0 2 * * 7-1",
        "@",
        "@@daily",
        ",,,, * * * *",
    ];
    for text in hostile {
        // Whatever croner makes of these, the answer is an Ok or an Err, never a panic.
        let _ = parse_backup_schedule(text);
    }
}

#[test]
fn refuses_schedules_that_never_fire() {
    let error = parse_backup_schedule("0 0 30 2 *").expect_err("February 30th");
    assert_eq!(error, ScheduleError::NeverFires("0 0 30 2 *".into()));
    assert!(error.to_string().contains("never fires"));
    assert_eq!(
        parse_backup_schedule("0 2 31 2,4,6,9,11 *").expect_err("no 31st"),
        ScheduleError::NeverFires("0 2 31 2,4,6,9,11 *".into())
    );
    assert!(
        parse_backup_schedule("0 0 29 2 *").is_ok(),
        "leap days come"
    );
}

#[test]
fn refuses_snapshots_more_often_than_hourly() {
    for text in ["* * * * *", "*/15 * * * *", "0,30 2 * * *", "0-5 3 * * 6"] {
        assert_eq!(
            parse_backup_schedule(text).expect_err(text),
            ScheduleError::TooFrequent(text.into()),
        );
    }
    assert!(parse_backup_schedule("0 * * * *").is_ok());
    assert!(
        parse_backup_schedule("59 0,1 * * *").is_ok(),
        "00:59 and 01:59"
    );
}

#[test]
fn a_passed_slot_after_the_last_snapshot_is_due() {
    let daily = schedule("0 2 * * *");
    let created = at("2025-01-01T00:00:00Z");
    let last = Some(at("2025-03-09T02:00:04Z"));
    assert_eq!(
        next_backup(&daily, last, created, at("2025-03-10T02:00:30Z")),
        BackupDecision::TakeNow {
            due: at("2025-03-10T02:00:00Z")
        }
    );
    // Exactly at the slot counts as passed.
    assert_eq!(
        next_backup(&daily, last, created, at("2025-03-10T02:00:00Z")),
        BackupDecision::TakeNow {
            due: at("2025-03-10T02:00:00Z")
        }
    );
}

#[test]
fn after_taking_a_snapshot_it_waits_for_the_next_slot() {
    let daily = schedule("0 2 * * *");
    let created = at("2025-01-01T00:00:00Z");
    let last = Some(at("2025-03-10T02:00:04Z"));
    assert_eq!(
        next_backup(&daily, last, created, at("2025-03-10T02:00:30Z")),
        BackupDecision::Wait {
            until: at("2025-03-11T02:00:00Z")
        }
    );
    assert_eq!(
        next_backup(&daily, last, created, at("2025-03-10T23:59:59Z")),
        BackupDecision::Wait {
            until: at("2025-03-11T02:00:00Z")
        }
    );
}

#[test]
fn a_new_server_waits_for_its_first_slot() {
    let daily = schedule("0 2 * * *");
    let created = at("2025-03-10T09:00:00Z");
    assert_eq!(
        next_backup(&daily, None, created, at("2025-03-10T09:00:05Z")),
        BackupDecision::Wait {
            until: at("2025-03-11T02:00:00Z")
        }
    );
    assert_eq!(
        next_backup(&daily, None, created, at("2025-03-11T02:00:01Z")),
        BackupDecision::TakeNow {
            due: at("2025-03-11T02:00:00Z")
        }
    );
}

#[test]
fn missed_slots_yield_one_snapshot_not_a_burst() {
    let hourly = schedule("@hourly");
    let created = at("2025-01-01T00:00:00Z");
    // The operator was down for two days: one snapshot, for the latest slot.
    let last = Some(at("2025-03-08T10:00:02Z"));
    let now = at("2025-03-10T10:17:00Z");
    assert_eq!(
        next_backup(&hourly, last, created, now),
        BackupDecision::TakeNow {
            due: at("2025-03-10T10:00:00Z")
        }
    );
    // Once it is taken, nothing more until the next hour.
    let taken = Some(at("2025-03-10T10:17:01Z"));
    assert_eq!(
        next_backup(&hourly, taken, created, at("2025-03-10T10:17:05Z")),
        BackupDecision::Wait {
            until: at("2025-03-10T11:00:00Z")
        }
    );
}

#[test]
fn snapshots_from_before_the_server_existed_do_not_count() {
    // A retained snapshot of an earlier server with the same name is older than this one.
    let daily = schedule("0 2 * * *");
    let created = at("2025-03-10T09:00:00Z");
    let retained = Some(at("2025-02-01T02:00:00Z"));
    assert_eq!(
        next_backup(&daily, retained, created, at("2025-03-10T09:30:00Z")),
        BackupDecision::Wait {
            until: at("2025-03-11T02:00:00Z")
        }
    );
}

#[test]
fn a_snapshot_newer_than_now_skews_nothing() {
    // The API server's clock is ahead of ours: the snapshot looks newer than `now`.
    let daily = schedule("0 2 * * *");
    let created = at("2025-01-01T00:00:00Z");
    let last = Some(at("2025-03-10T02:00:10Z"));
    assert_eq!(
        next_backup(&daily, last, created, at("2025-03-10T02:00:05Z")),
        BackupDecision::Wait {
            until: at("2025-03-11T02:00:00Z")
        }
    );
}

#[test]
fn weekly_and_monthly_nicknames_fire_when_cron_does() {
    let created = at("2025-01-01T00:00:00Z");
    let last = Some(at("2025-03-01T00:00:05Z"));
    // 2025-03-09 is a Sunday.
    assert_eq!(
        next_backup(
            &schedule("@weekly"),
            last,
            created,
            at("2025-03-10T12:00:00Z")
        ),
        BackupDecision::TakeNow {
            due: at("2025-03-09T00:00:00Z")
        }
    );
    assert_eq!(
        next_backup(
            &schedule("@monthly"),
            last,
            created,
            at("2025-03-10T12:00:00Z")
        ),
        BackupDecision::Wait {
            until: at("2025-04-01T00:00:00Z")
        }
    );
}

fn snapshot(name: &str, created: Option<&str>, ready: bool, failed: bool) -> SnapshotInfo {
    SnapshotInfo {
        name: name.into(),
        created: created.map(at),
        ready,
        failed,
    }
}

#[test]
fn keeps_the_newest_ready_snapshots() {
    let snapshots = [
        snapshot("s3", Some("2025-03-03T02:00:00Z"), true, false),
        snapshot("s1", Some("2025-03-01T02:00:00Z"), true, false),
        snapshot("s4", Some("2025-03-04T02:00:00Z"), true, false),
        snapshot("s2", Some("2025-03-02T02:00:00Z"), true, false),
    ];
    assert_eq!(snapshots_to_prune(&snapshots, 2), ["s1", "s2"]);
    assert!(snapshots_to_prune(&snapshots, 4).is_empty());
    assert!(snapshots_to_prune(&snapshots, 100).is_empty());
}

#[test]
fn never_deletes_a_snapshot_in_progress() {
    let snapshots = [
        snapshot("old", Some("2025-03-01T02:00:00Z"), true, false),
        snapshot("running", Some("2025-02-01T02:00:00Z"), false, false),
        snapshot("new", Some("2025-03-02T02:00:00Z"), true, false),
        snapshot("no-time", None, false, false),
    ];
    assert_eq!(snapshots_to_prune(&snapshots, 1), ["old"]);
}

#[test]
fn failed_snapshots_go_once_a_newer_one_succeeded() {
    let snapshots = [
        snapshot("failed-old", Some("2025-03-01T02:00:00Z"), false, true),
        snapshot("good", Some("2025-03-02T02:00:00Z"), true, false),
        snapshot("failed-new", Some("2025-03-03T02:00:00Z"), false, true),
        snapshot("failed-untimed", None, false, true),
    ];
    // The newest failure stays as evidence until a later backup succeeds.
    assert_eq!(
        snapshots_to_prune(&snapshots, 7),
        ["failed-untimed", "failed-old"]
    );
}

#[test]
fn failures_are_kept_while_no_backup_succeeded() {
    let snapshots = [
        snapshot("f1", Some("2025-03-01T02:00:00Z"), false, true),
        snapshot("f2", Some("2025-03-02T02:00:00Z"), false, true),
    ];
    assert!(snapshots_to_prune(&snapshots, 1).is_empty());
}

#[test]
fn retention_never_deletes_the_last_good_backup() {
    let snapshots = [
        snapshot("a", Some("2025-03-01T02:00:00Z"), true, false),
        snapshot("b", Some("2025-03-02T02:00:00Z"), true, false),
    ];
    assert_eq!(snapshots_to_prune(&snapshots, 0), ["a"]);
    assert!(snapshots_to_prune(&[], 0).is_empty());
}

#[test]
fn a_snapshot_claiming_ready_and_failed_is_treated_as_failed() {
    let snapshots = [
        snapshot("odd", Some("2025-03-01T02:00:00Z"), true, true),
        snapshot("good", Some("2025-03-02T02:00:00Z"), true, false),
    ];
    assert_eq!(snapshots_to_prune(&snapshots, 5), ["odd"]);
}

#[test]
fn untimed_ready_snapshots_are_the_oldest_and_ties_break_by_name() {
    let snapshots = [
        snapshot("b", Some("2025-03-01T02:00:00Z"), true, false),
        snapshot("a", Some("2025-03-01T02:00:00Z"), true, false),
        snapshot("untimed", None, true, false),
    ];
    assert_eq!(snapshots_to_prune(&snapshots, 1), ["untimed", "a"]);
}

#[test]
fn latest_snapshot_time_counts_every_state() {
    let snapshots = [
        snapshot("a", Some("2025-03-01T02:00:00Z"), true, false),
        snapshot("b", Some("2025-03-02T02:00:00Z"), false, false),
        snapshot("c", None, false, true),
    ];
    assert_eq!(
        latest_snapshot_time(&snapshots),
        Some(at("2025-03-02T02:00:00Z"))
    );
    assert_eq!(latest_snapshot_time(&[]), None);
}

fn window(days: &[Weekday], start: &str, minutes: i32) -> MaintenanceWindow {
    MaintenanceWindow {
        days: days.to_vec(),
        start: start.into(),
        duration_minutes: minutes,
    }
}

#[test]
fn parses_window_starts_strictly() {
    assert_eq!(parse_window_start("02:00"), Ok(Time::constant(2, 0, 0, 0)));
    assert_eq!(
        parse_window_start("23:59"),
        Ok(Time::constant(23, 59, 0, 0))
    );
    for bad in [
        "",
        "2:00",
        "02:0",
        "24:00",
        "12:60",
        "0200",
        "02:00:00",
        "ab:cd",
        "-1:00",
        "+2:00",
        "02:+1",
        "٠٢:٠٠",
    ] {
        assert_eq!(
            parse_window_start(bad),
            Err(ScheduleError::InvalidStart(bad.into())),
            "{bad}"
        );
    }
    assert!(check_window(&window(&[], "02:00", 30)).is_ok());
    assert_eq!(
        check_window(&window(&[], "02:00", 29)),
        Err(ScheduleError::InvalidDuration(29))
    );
    assert_eq!(
        check_window(&window(&[], "02:00", 721)),
        Err(ScheduleError::InvalidDuration(721))
    );
}

#[test]
fn an_every_day_window_is_open_from_start_to_end() {
    let nightly = window(&[], "02:00", 120);
    assert!(!window_open(&nightly, at("2025-03-10T01:59:59Z")));
    assert!(window_open(&nightly, at("2025-03-10T02:00:00Z")));
    assert!(window_open(&nightly, at("2025-03-10T03:59:59Z")));
    assert!(!window_open(&nightly, at("2025-03-10T04:00:00Z")));
    assert_eq!(
        next_window_opening(&nightly, at("2025-03-10T01:00:00Z")),
        at("2025-03-10T02:00:00Z")
    );
    assert_eq!(
        next_window_opening(&nightly, at("2025-03-10T02:30:00Z")),
        at("2025-03-11T02:00:00Z"),
        "an open window reports its next opening"
    );
}

#[test]
fn a_window_may_cross_midnight() {
    // Saturday 23:00 for three hours: open until Sunday 02:00, though Sunday is not listed.
    let weekend = window(&[Weekday::Sat], "23:00", 180);
    // 2025-03-08 is a Saturday.
    assert!(window_open(&weekend, at("2025-03-08T23:30:00Z")));
    assert!(window_open(&weekend, at("2025-03-09T01:59:00Z")));
    assert!(!window_open(&weekend, at("2025-03-09T02:00:00Z")));
    assert!(!window_open(&weekend, at("2025-03-09T23:30:00Z")), "Sunday");
    assert!(!window_open(&weekend, at("2025-03-07T23:30:00Z")), "Friday");
    assert_eq!(
        next_window_opening(&weekend, at("2025-03-09T01:00:00Z")),
        at("2025-03-15T23:00:00Z")
    );
}

#[test]
fn listed_days_choose_the_openings() {
    let workdays = window(&[Weekday::Tue, Weekday::Thu], "12:00", 30);
    // 2025-03-10 is a Monday.
    assert!(!window_open(&workdays, at("2025-03-10T12:10:00Z")));
    assert!(window_open(&workdays, at("2025-03-11T12:10:00Z")));
    assert_eq!(
        next_window_opening(&workdays, at("2025-03-10T12:10:00Z")),
        at("2025-03-11T12:00:00Z")
    );
    assert_eq!(
        next_window_opening(&workdays, at("2025-03-11T12:10:00Z")),
        at("2025-03-13T12:00:00Z")
    );
    assert_eq!(
        next_window_opening(&workdays, at("2025-03-13T12:00:00Z")),
        at("2025-03-18T12:00:00Z")
    );
    let sundays = window(&[Weekday::Sun], "00:00", 60);
    assert_eq!(
        next_window_opening(&sundays, at("2025-03-09T00:00:00Z")),
        at("2025-03-16T00:00:00Z"),
        "a full week ahead"
    );
}

#[test]
fn a_broken_window_never_opens_and_never_panics() {
    let now = at("2025-03-10T02:30:00Z");
    for broken in [
        window(&[], "25:00", 60),
        window(&[], "garbage", 60),
        window(&[], "02:00", 0),
        window(&[], "02:00", -60),
    ] {
        assert!(!window_open(&broken, now), "{broken:?}");
        assert_eq!(
            next_window_opening(&broken, now),
            at("2025-03-11T02:30:00Z"),
            "{broken:?}"
        );
    }
    // An absurdly long window (bypassing the CRD) is cut to a week, not eternity.
    let huge = window(&[Weekday::Mon], "12:00", i32::MAX);
    assert!(
        window_open(&huge, at("2025-03-17T11:59:00Z")),
        "Monday to Monday"
    );
    // Times at the edge of what jiff represents do not panic.
    let _ = window_open(&window(&[], "23:00", 720), Timestamp::MAX);
    let _ = next_window_opening(&window(&[], "23:00", 720), Timestamp::MAX);
    let _ = window_open(&window(&[], "00:00", 720), Timestamp::MIN);
    let daily = schedule("@daily");
    let _ = next_backup(&daily, None, Timestamp::MIN, Timestamp::MAX);
    let _ = next_backup(&daily, Some(Timestamp::MAX), Timestamp::MIN, Timestamp::MIN);
}
