#!/bin/sh
# Mosquitto's start in docker-compose.yml: make the password file from the environment (.env:
# MQTT_USERNAME, MQTT_PASSWORD), readable by the broker only, then run the broker with the shipped config.
# The password goes to mosquitto_passwd on its standard input, never on a command line.
# MOSQUITTO_BIN, MOSQUITTO_CONF and PASSWORD_FILE may be set to run this outside the container (tests).
set -eu
: "${MQTT_USERNAME:?set MQTT_USERNAME in .env}"
: "${MQTT_PASSWORD:?set MQTT_PASSWORD in .env}"
conf="${MOSQUITTO_CONF:-/mosquitto/config/mosquitto.conf}"
passwd="${PASSWORD_FILE:-/mosquitto/passwords/passwd}"

umask 077
mkdir -p "$(dirname "$passwd")"
printf '%s\n%s\n' "$MQTT_PASSWORD" "$MQTT_PASSWORD" | mosquitto_passwd -c "$passwd" "$MQTT_USERNAME" >/dev/null
if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then
  # the broker drops to the user mosquitto: it must own its password file and data directory
  chown mosquitto:mosquitto "$passwd"
  chown -R mosquitto:mosquitto /mosquitto/data 2>/dev/null || true
fi
exec "${MOSQUITTO_BIN:-mosquitto}" -c "$conf"
