# shellyctl in a container: build, then a small runtime image with cron
# running the same schedule as the systemd timers (cron/shellyctl.cron).
# See compose.yaml for PostgreSQL + shellyctl.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && strip target/release/shellyctl

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends cron ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/shellyctl --create-home --shell /usr/sbin/nologin shellyctl
COPY --from=build /src/target/release/shellyctl /usr/local/bin/shellyctl
COPY cron/shellyctl.cron /etc/cron.d/shellyctl
COPY cron/cron-run /usr/local/lib/shellyctl/cron-run
# The container's environment becomes the jobs' settings file, then cron
# runs the schedule in the foreground.
CMD ["/bin/sh", "-c", "mkdir -p /etc/shellyctl && env | grep -E '^(DATABASE_URL|SHELLY_|ALERT_|NOTIFY_|TRIGGER_|MQTT_|HOMEBRIDGE_|LISTEN_|POWER_|RETENTION_|TZ|SHELLYCTL_|CREDENTIALS_DIRECTORY)' | sed 's/^/export /' > /etc/shellyctl/shellyctl.env && chmod 644 /etc/shellyctl/shellyctl.env && shellyctl migrate && exec cron -f"]
