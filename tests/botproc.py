"""Run the real `stylebot` in its own process against a fakecord at a given address.

    python -m tests.botproc http://127.0.0.1:PORT

Settings come from the environment as in production (DISCORD_TOKEN, STYLEBOT_*). The only
difference from `stylebot` is where discord.py looks for Discord: fakecord's REST API and
gateway on loopback instead of discord.com. Tests and benches use it to kill, signal and restart
the bot as an operator would.
"""

from __future__ import annotations

import sys

import discord.gateway
import discord.http
import yarl

from bot.__main__ import main


def point_at(base: str) -> None:
    discord.http.Route.BASE = f"{base}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(base.replace("http", "ws") + "/")


if __name__ == "__main__":
    point_at(sys.argv[1])
    sys.exit(main([]))
