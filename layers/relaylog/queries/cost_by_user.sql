-- Spend per user, last 30 days.
SELECT user_id, count(*) AS requests, sum(cost_usd) AS cost_usd, sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens, max(created_at) AS last_seen
FROM requests
WHERE dt >= substr(CAST(current_date - INTERVAL '30' DAY AS VARCHAR), 1, 10)
GROUP BY user_id
ORDER BY cost_usd DESC NULLS LAST
