//! Job runs, per job and device, for `shellyctl health`.

use postgres::GenericClient;

/// Records one run's outcome. Best effort: a failure to record is logged,
/// never turned into a job failure.
pub fn record(client: &mut impl GenericClient, job: &str, device_id: &str, error: Option<&str>) {
    let r = client.execute(
        "INSERT INTO job_runs (job, device_id, last_run, last_success, last_failure, last_error, runs, failures)
         VALUES ($1, $2, now(), CASE WHEN $3::text IS NULL THEN now() END, CASE WHEN $3::text IS NOT NULL THEN now() END, $3, 1,
                 CASE WHEN $3::text IS NULL THEN 0 ELSE 1 END)
         ON CONFLICT (job, device_id) DO UPDATE SET
             last_run = now(),
             last_success = CASE WHEN $3::text IS NULL THEN now() ELSE job_runs.last_success END,
             last_failure = CASE WHEN $3::text IS NOT NULL THEN now() ELSE job_runs.last_failure END,
             last_error = COALESCE($3, job_runs.last_error),
             runs = job_runs.runs + 1,
             failures = job_runs.failures + CASE WHEN $3::text IS NULL THEN 0 ELSE 1 END",
        &[&job, &device_id, &error],
    );
    if let Err(e) = r {
        crate::log::warn(
            "job_run_not_recorded",
            None,
            serde_json::json!({"job": job, "error": crate::db::error_text(&e)}),
        );
    }
}

/// Records a device job's outcome, in one statement. When the device id
/// is not known (it never answered), under the id last seen at that host,
/// else the host itself; once the id is known, a row kept under the host
/// name is dropped, so a first-run failure does not outlive the device's
/// recovery. Best effort, as [`record`].
pub fn record_for_host(
    client: &mut impl GenericClient,
    job: &str,
    host: &str,
    device_id: Option<&str>,
    error: Option<&str>,
) {
    let r = client.execute(
        "WITH target AS (
             SELECT COALESCE($3::text,
                 (SELECT device_id FROM devices WHERE host = $2 ORDER BY last_seen DESC NULLS LAST LIMIT 1),
                 $2) AS id
         ), gone AS (
             DELETE FROM job_runs WHERE job = $1 AND device_id = $2
                AND $3::text IS NOT NULL AND $3::text <> $2
         )
         INSERT INTO job_runs (job, device_id, last_run, last_success, last_failure, last_error, runs, failures)
         SELECT $1, id, now(), CASE WHEN $4::text IS NULL THEN now() END, CASE WHEN $4::text IS NOT NULL THEN now() END, $4, 1,
                CASE WHEN $4::text IS NULL THEN 0 ELSE 1 END
           FROM target
         ON CONFLICT (job, device_id) DO UPDATE SET
             last_run = now(),
             last_success = CASE WHEN $4::text IS NULL THEN now() ELSE job_runs.last_success END,
             last_failure = CASE WHEN $4::text IS NOT NULL THEN now() ELSE job_runs.last_failure END,
             last_error = COALESCE($4, job_runs.last_error),
             runs = job_runs.runs + 1,
             failures = job_runs.failures + CASE WHEN $4::text IS NULL THEN 0 ELSE 1 END",
        &[&job, &host, &device_id, &error],
    );
    if let Err(e) = r {
        crate::log::warn(
            "job_run_not_recorded",
            None,
            serde_json::json!({"job": job, "error": crate::db::error_text(&e)}),
        );
    }
}
