-- Flights with two more targets for the task-kind tests: a delay band (multi-class, string
-- labels) and the arrival delay in minutes (regression). BigQuery dialect.
SELECT
  DATE(f.year, f.month, f.day) AS flight_date,
  f.carrier,
  f.origin,
  f.dest,
  CAST(DIV(f.sched_dep_time, 100) AS FLOAT64) AS dep_hour,
  CAST(f.distance AS FLOAT64) AS distance,
  CASE
    WHEN f.arr_delay < 0 THEN 'early'
    WHEN f.arr_delay < 15 THEN 'on_time'
    WHEN f.arr_delay < 60 THEN 'late'
    ELSE 'very_late'
  END AS delay_band,
  CAST(f.arr_delay AS FLOAT64) AS arr_delay
FROM `${source_dataset}.flights` AS f
WHERE f.arr_delay IS NOT NULL
  AND DATE(f.year, f.month, f.day) BETWEEN @start_date AND @end_date
