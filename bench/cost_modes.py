"""What the proxy costs per million calls on classic Lambda and on Lambda Managed Instances.

    .venv/bin/python bench/cost_modes.py [--instance-hour 0.08925] [--per-environment 64] [--no-nat-hours]

Arithmetic only, from the list prices and assumptions below (us-east-1; each names where it comes
from, or says it is assumed): for 1 million, 100 million and 1 billion calls a month, evenly spread
over its 730 hours, of 1 and 5 seconds each, the proxy's monthly cost in each mode and per million
calls, then the monthly volume at which the two cost the same. The rest of the stack (Firehose, S3,
the aggregator, DynamoDB, logs: about $7.9 per million in the README's table) is the same in both
modes and left out. The README's cost section is this script's output.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

HOURS = 730  # a month, as AWS's price pages count it
SECONDS = HOURS * 3600
# Classic Lambda, x86, first duration tier (up to 6 billion GB-s a month; 1 billion 5-second calls
# at 0.5 GB are 2.5 billion), and requests ("How AWS Pricing Works", Lambda:
# https://docs.aws.amazon.com/whitepapers/latest/how-aws-pricing-works/lambda.html).
GB_SECOND = 0.0000166667
REQUEST = 0.20 / 1e6
PROXY_GB = 0.5  # ProxyMemory's default, 512 MB
OVERHEAD_S = 0.05  # per call beyond the provider's answer: start of the stream, record hand-off
# Lambda Managed Instances (https://aws.amazon.com/lambda/pricing/, section Lambda Managed
# Instances, as transcribed on 2026-09-20): $0.20 per million requests and a management fee of 15%
# of the instance's EC2 on-demand price, on top of that price.
MANAGEMENT_FEE = 0.15
# ASSUMED, not found in the stored pages: c7i.large (2 vCPU, 4 GiB: the template's 2 GiB per vCPU)
# at $0.08925 an hour on demand, Linux, us-east-1, AWS's price list as of 2025. For scale, a stored
# page gives the arm64 m7g.large at $0.0816 an hour (June 2026); the layer is built for x86_64.
INSTANCE_HOUR = 0.08925
INSTANCE_VCPUS = 2  # each holding two proxy environments of one vCPU (assumed: no room kept back)
MIN_INSTANCES = 3  # Lambda keeps three for Availability Zone resilience (lambda-managed-instances-scaling.html)
# Measured: bench/runtime_concurrency.py, 256 one-second streams in one runtime process on this
# shared 2-core VM, 1.3 ms of CPU per call (its relay part 0.85 ms; 2.8 ms before 2026-12-03's
# speed work, which left this table as it was: the fleet is set by concurrency). Lambda scales on
# CPU, so the fleet keeps each vCPU at most half busy: room for traffic to double, which Lambda
# absorbs in 5 minutes.
CPU_PER_CALL_S = 0.0013
CPU_TARGET = 0.5
# The instances sit in private subnets and reach the providers and Firehose through NAT gateways:
# $0.045 an hour each and $0.045 per GB (us-east-1; a third-party summary of AWS's prices,
# https://www.novacalculator.com/serverlesscostinvocationbreakdownestimatorcalculator/). One per
# Availability Zone; about 16 KB a call through it (the exchange with the provider and the 8 KB record).
NAT_HOUR = 0.045
NAT_GB = 0.045
NAT_GATEWAYS = 3
BYTES_PER_CALL = 16_000

VOLUMES = (1_000_000, 100_000_000, 1_000_000_000)
DURATIONS = (1.0, 5.0)


@dataclass(frozen=True)
class Fleet:
    environments: int
    instances: int
    monthly: float


def classic(calls: float, seconds: float) -> float:
    """The month's proxy cost on classic Lambda: every call billed for its whole length."""
    return calls * ((seconds + OVERHEAD_S) * PROXY_GB * GB_SECOND + REQUEST)


def managed(calls: float, seconds: float, per_environment: int, instance_hour: float, nat_hours: bool) -> Fleet:
    """The month's proxy cost on Managed Instances: enough one-vCPU environments for the calls under
    way at once and for their CPU, on at least three instances, plus the fee, requests and NAT."""
    rate = calls / SECONDS
    environments = max(
        math.ceil(rate * seconds / per_environment),
        math.ceil(rate * CPU_PER_CALL_S / CPU_TARGET),
        MIN_INSTANCES,  # one environment in each Availability Zone at least
    )
    instances = max(MIN_INSTANCES, math.ceil(environments / INSTANCE_VCPUS))
    compute = instances * instance_hour * (1 + MANAGEMENT_FEE) * HOURS
    nat = NAT_GATEWAYS * NAT_HOUR * HOURS * nat_hours + calls * BYTES_PER_CALL / 1e9 * NAT_GB
    return Fleet(environments, instances, compute + calls * REQUEST + nat)


def crossover(seconds: float, per_environment: int, instance_hour: float, nat_hours: bool) -> float:
    """The fewest calls a month at which Managed Instances costs no more than classic Lambda."""
    low, high = 1.0, 1e12
    while high / low > 1.001:
        middle = math.sqrt(low * high)
        fleet = managed(middle, seconds, per_environment, instance_hour, nat_hours)
        low, high = (low, middle) if fleet.monthly <= classic(middle, seconds) else (middle, high)
    return high


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instance-hour", type=float, default=INSTANCE_HOUR, help="on-demand $ per instance-hour")
    parser.add_argument("--per-environment", type=int, default=64, help="ProxyConcurrencyPerEnvironment")
    parser.add_argument("--no-nat-hours", action="store_true", help="NAT gateways already there: data only")
    args = parser.parse_args()
    nat_hours = not args.no_nat_hours
    print(f"Proxy cost, us-east-1: classic at {PROXY_GB * 1024:.0f} MB; Managed Instances at "
          f"${args.instance_hour}/instance-hour + {MANAGEMENT_FEE:.0%}, {args.per_environment} calls per "
          f"environment, NAT {'hours and data' if nat_hours else 'data only'}")  # fmt: skip
    print(
        "| calls a month | call | classic $/month | classic $ per 1M | Managed Instances: environments, "
        "instances | $/month | $ per 1M |"
    )
    print("|---|---|---|---|---|---|---|")
    for calls in VOLUMES:
        for seconds in DURATIONS:
            lambda_cost = classic(calls, seconds)
            fleet = managed(calls, seconds, args.per_environment, args.instance_hour, nat_hours)
            print(f"| {calls:,} | {seconds:.0f} s | {lambda_cost:,.0f} | {lambda_cost / calls * 1e6:,.2f} | "
                  f"{fleet.environments}, {fleet.instances} | {fleet.monthly:,.0f} | "
                  f"{fleet.monthly / calls * 1e6:,.2f} |")  # fmt: skip
    for seconds in DURATIONS:
        calls = crossover(seconds, args.per_environment, args.instance_hour, nat_hours)
        print(f"{seconds:.0f}-second calls: Managed Instances is cheaper from about {calls / 1e6:,.1f} million "
              f"calls a month ({calls / SECONDS:.1f} a second on average)")  # fmt: skip


if __name__ == "__main__":
    main()
