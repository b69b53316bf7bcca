#!/usr/bin/env bash
# The cost of TLS (issue 30): `tidemark run` over the same secured Apache Kafka node's
# PLAINTEXT and SASL_SSL (SCRAM-SHA-512) listeners, interleaved (PLAINTEXT, SASL_SSL,
# PLAINTEXT, …) so a busy broker disturbs both alike; a no-op row and a sink row
# (`--sink topic:`), each the median of ROUNDS runs with the slowest and fastest
# beside it, records/s (the CLI's, over its busy time) and CPU time per record (the
# process's user + system time, start-up and the idle stop included, / records).
#   bash scripts/bench-tls.sh [RECORDS] [ROUNDS]      (default 500000 3)
# Writes bench-results/tls/tls.csv and prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS="${1:-500000}"; ROUNDS="${2:-3}"
scripts/kafka.sh install >/dev/null
cargo build --release -q -p tidemark-cli
T=target/release/tidemark
read -r sasl _ plain pid dir < <(KAFKA_WATCH_PID=$$ scripts/kafka.sh start-secured)
trap 'scripts/kafka.sh stop "$pid"; rm -rf "$dir"' EXIT
certs="$dir/certs"
printf 'bootstrap.servers=127.0.0.1:%s\n' "$plain" >"$dir/plaintext.properties"
printf 'bootstrap.servers=localhost:%s\nsecurity.protocol=SASL_SSL\nsasl.mechanisms=SCRAM-SHA-512\nsasl.username=alice\nsasl.password=alice-secret\nssl.ca.location=%s/ca.pem\n' \
  "$sasl" "$certs" >"$dir/sasl_ssl.properties"
topic="alice-tls-bench"
$T produce --client-config "$dir/plaintext.properties" --topic "$topic" --records "$RECORDS" --partitions 8 >/dev/null
out=bench-results/tls; mkdir -p "$out"
echo "listener,row,round,records,records_per_s,cpu_us_per_record" >"$out/tls.csv"
for round in $(seq 1 "$ROUNDS"); do
  for row in noop sink; do
    for listener in plaintext sasl_ssl; do
      group="alice-g-$listener-$row-$round-$RANDOM"
      sink=(); [ "$row" = sink ] && sink=(--sink "topic:alice-out-$listener-$round-$RANDOM")
      line=$( { /usr/bin/time -f 'CPU %U %S' "$T" run --client-config "$dir/$listener.properties" \
                 --topic "$topic" --group "$group" --processor noop "${sink[@]}" --exit-when-idle 2; } 2>&1 )
      rate=$(sed -n 's/^processed \([0-9]*\) records: \([0-9]*\) records\/s.*/\1 \2/p' <<<"$line")
      cpu=$(sed -n 's/^CPU \([0-9.]*\) \([0-9.]*\)$/\1 \2/p' <<<"$line")
      read -r n rps <<<"$rate"; read -r u s <<<"$cpu"
      [ -n "${n:-}" ] && [ "$n" -gt 0 ] || { echo "$line" >&2; echo "bench-tls: a run failed" >&2; exit 1; }
      per=$(python3 -c "print(f'{($u+$s)*1e6/$n:.2f}')")
      echo "$listener,$row,$round,$n,$rps,$per" >>"$out/tls.csv"
    done
  done
done
python3 - "$out/tls.csv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print("| row | listener | records/s (median; min–max) | CPU µs/record (median) |")
print("|---|---|---|---|")
for row in ("noop", "sink"):
    for listener in ("plaintext", "sasl_ssl"):
        rs = [r for r in rows if r["row"] == row and r["listener"] == listener]
        rps = sorted(float(r["records_per_s"]) for r in rs)
        cpu = statistics.median(float(r["cpu_us_per_record"]) for r in rs)
        print(f"| {row} | {listener.upper()} | {statistics.median(rps):,.0f} ({rps[0]:,.0f}–{rps[-1]:,.0f}) | {cpu:.2f} |")
PY
