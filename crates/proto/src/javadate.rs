//! Java's `Date.toString()` (`EEE MMM dd HH:mm:ss zzz yyyy`), as ZooKeeper prints times in `cons`, `dump` and
//! zkCli.sh's Stat: shared by the server's four-letter words and the shell.

const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `ms` since the epoch, shown in a zone `offset_secs` east of UTC whose abbreviation is `zone`:
/// `Sat Nov 21 16:33:43 UTC 2026`.
pub fn java_date(ms: i64, offset_secs: i64, zone: &str) -> String {
    let local = ms.div_euclid(1000) + offset_secs;
    let days = local.div_euclid(86_400);
    let of_day = local.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let weekday = WEEKDAYS[days.rem_euclid(7) as usize];
    format!(
        "{weekday} {} {day:02} {:02}:{:02}:{:02} {zone} {year}",
        MONTHS[(month - 1) as usize],
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// (year, month 1-12, day 1-31) of a day counted from 1970-01-01, proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_java_does() {
        assert_eq!(java_date(0, 0, "UTC"), "Thu Jan 01 00:00:00 UTC 1970");
        // 2026-11-21 16:33:43.999 UTC (a Saturday)
        assert_eq!(
            java_date(1_795_278_823_999, 0, "UTC"),
            "Sat Nov 21 16:33:43 UTC 2026"
        );
        assert_eq!(
            java_date(1_795_278_823_999, 3600, "CET"),
            "Sat Nov 21 17:33:43 CET 2026"
        );
        // Leap day, and a time before the epoch.
        assert_eq!(
            java_date(951_782_400_000, 0, "UTC"),
            "Tue Feb 29 00:00:00 UTC 2000"
        );
        assert_eq!(java_date(-1, 0, "UTC"), "Wed Dec 31 23:59:59 UTC 1969");
    }
}
