-- Cost, calls and tokens per day and model, last 30 days.
SELECT dt, model, count(*) AS requests, sum(cost_usd) AS cost_usd, sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens, sum(CASE WHEN cost_usd IS NULL THEN 1 ELSE 0 END) AS unpriced
FROM requests
WHERE dt >= substr(CAST(current_date - INTERVAL '30' DAY AS VARCHAR), 1, 10)
GROUP BY dt, model
ORDER BY dt DESC, cost_usd DESC NULLS LAST
