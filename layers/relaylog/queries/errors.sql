-- Failed calls by kind, last 7 days.
SELECT provider, status, error_type, count(*) AS requests, max(created_at) AS last_seen
FROM requests
WHERE dt >= substr(CAST(current_date - INTERVAL '7' DAY AS VARCHAR), 1, 10)
  AND (status >= 400 OR status = 0 OR error_type IS NOT NULL)
GROUP BY provider, status, error_type
ORDER BY requests DESC
