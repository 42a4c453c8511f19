#!/usr/bin/env bash
# Builds Hubbub's web pages into the directories the binary embeds:
# web/static/app.js (the chat page, on the TypeScript SDK) and
# web/admin/admin.js (the admin console). Needs Node.js 20+ and npm; installs
# the pinned packages (npm ci) in sdk/ts and web when they are missing or stale.
set -euo pipefail
cd "$(dirname "$0")/.."

install() { # npm ci in $1 unless done since its lock file last changed
	local mark="$1/node_modules/.hubbub-installed"
	if [ ! -e "$mark" ] || [ "$1/package-lock.json" -nt "$mark" ]; then
		(cd "$1" && npm ci --no-audit --no-fund --silent)
		touch "$mark"
	fi
}
install sdk/ts
install web
node web/build.mjs
