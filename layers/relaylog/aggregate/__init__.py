"""The aggregator: delivered S3 objects of records → DynamoDB rollups (exactly once) and Parquet."""
