"""Interaction routes: the callback that answers an interaction (types 4-9), and the webhook
routes for follow-ups and the `@original` response (GET, PATCH, DELETE)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import interactions as ix
from .payloads import ApiError, Upload, json_response, message_fields, read_body
from .rest import apply_edit
from .state import EPHEMERAL, LOADING, Message, snowflake

if TYPE_CHECKING:
    from .emulator import FakeDiscord


class InteractionRoutes:
    def __init__(self, hub: FakeDiscord) -> None:
        self.hub = hub

    def _interaction(self, token: str, *, answered: bool) -> ix.Interaction:
        """The interaction `token` belongs to, checked the way Discord does: a callback within
        `interaction_deadline` s; follow-ups and @original only after one, for the token's
        lifetime (15 minutes)."""
        iid = token.removeprefix("aW50ZXJhY3Rpb246").split(":", 1)[0]
        interaction = self.hub.interactions.get(int(iid)) if iid.isdigit() else None
        if interaction is None or interaction.token != token:
            if answered:
                raise ApiError(404, 10015, "Unknown Webhook")
            raise ApiError(404, 10062, "Unknown interaction")
        age = time.monotonic() - interaction.created
        if not answered:
            if age > self.hub.interaction_deadline and not interaction.responded:
                raise ApiError(404, 10062, "Unknown interaction")
            return interaction
        if not interaction.responded:
            raise ApiError(404, 10015, "Unknown Webhook")
        if age > self.hub.interaction_token_lifetime:
            raise ApiError(401, 50027, "Invalid Webhook Token")
        return interaction

    async def callback(self, request: web.Request) -> web.Response:
        interaction = self._interaction(request.match_info["token"], answered=False)
        if str(interaction.id) != request.match_info["interaction_id"]:
            raise ApiError(404, 10062, "Unknown interaction")
        body, uploads = await read_body(request)
        if interaction.responded:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        kind = int(body.get("type", 0))
        data = body.get("data") or {}
        allowed = {
            ix.APPLICATION_COMMAND: {4, 5, 9},
            ix.MESSAGE_COMPONENT: {4, 5, 6, 7, 9},
            ix.AUTOCOMPLETE: {8},
        }[interaction.type]
        if kind not in allowed:
            raise ApiError(400, 50035, "Invalid Form Body", {"type": f"{kind} is not valid here"})
        if kind == ix.AUTOCOMPLETE_RESULT and len(data.get("choices", [])) > 25:
            raise ApiError(400, 50035, "Invalid Form Body", {"choices": "at most 25"})
        if kind in (ix.CHANNEL_MESSAGE, ix.DEFERRED_CHANNEL_MESSAGE):
            interaction.original = self._response_message(interaction, data, uploads, kind)
        elif kind == ix.UPDATE_MESSAGE:
            assert interaction.message is not None
            apply_edit(self.hub, interaction.message, data, uploads)
            interaction.original = interaction.message
        elif kind == ix.DEFERRED_UPDATE_MESSAGE:
            interaction.original = interaction.message
        interaction.callbacks.append(ix.Callback(kind, data, time.monotonic()))
        self.hub.changed()
        if "with_response" not in request.query:
            return web.Response(status=204)
        original = interaction.original
        body_out: dict[str, Any] = {
            "interaction": {
                "id": str(interaction.id),
                "type": interaction.type,
                "response_message_loading": kind == ix.DEFERRED_CHANNEL_MESSAGE,
                "response_message_ephemeral": bool(original and original.ephemeral),
                "channel_id": str(interaction.channel.id),
                "guild_id": str(interaction.channel.guild_id),
            },
        }
        if original is not None and kind != ix.DEFERRED_UPDATE_MESSAGE:
            body_out["interaction"]["response_message_id"] = str(original.id)
        if original is not None and kind in (ix.CHANNEL_MESSAGE, ix.UPDATE_MESSAGE):
            # Discord describes a resource only for types 4, 7 (and 12, activities).
            body_out["resource"] = {"type": kind, "message": self.hub.message_payload(original)}
        return json_response(body_out)

    def _response_message(
        self, interaction: ix.Interaction, data: dict[str, Any], uploads: list[Upload], kind: int
    ) -> Message:
        channel = interaction.channel
        guild = self.hub.guilds[channel.guild_id]
        if kind == ix.DEFERRED_CHANNEL_MESSAGE:
            fields: dict[str, Any] = {"flags": LOADING | (int(data.get("flags", 0)) & EPHEMERAL)}
        else:
            fields = message_fields(self.hub, data, uploads, guild, channel, existing=None)
            del fields["reference"], fields["type"]  # interaction answers are never replies
        metadata: dict[str, Any] = {
            "id": str(interaction.id),
            "type": interaction.type,
            "user": interaction.user.payload(),
            "authorizing_integration_owners": {"0": str(guild.id)},
        }
        command = interaction.payload["data"]
        if interaction.message is not None:
            metadata["interacted_message_id"] = str(interaction.message.id)
        else:
            metadata["name"] = command.get("name", "")
        if command.get("type") == ix.USER_COMMAND:
            metadata["target_user"] = command["resolved"]["users"][command["target_id"]]
        elif command.get("type") == ix.MESSAGE_COMMAND:
            metadata["target_message_id"] = command["target_id"]
        message = Message(
            id=snowflake(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=self.hub.bot_user,
            type=_message_type(interaction),
            webhook_id=self.hub.application_id,
            application_id=self.hub.application_id,
            interaction_metadata=metadata,
            **fields,
        )
        self.hub.add_message(message)
        return message

    def _webhook_interaction(self, request: web.Request) -> ix.Interaction:
        if int(request.match_info["application_id"]) != self.hub.application_id:
            raise ApiError(404, 10015, "Unknown Webhook")
        return self._interaction(request.match_info["token"], answered=True)

    def _webhook_message(self, request: web.Request) -> tuple[ix.Interaction, Message]:
        interaction = self._webhook_interaction(request)
        wanted = request.match_info["message_id"]
        if wanted == "@original":
            message = interaction.original
        else:
            message = next((m for m in interaction.messages if str(m.id) == wanted), None)
        if message is None or message.deleted:
            raise ApiError(404, 10008, "Unknown Message")
        return interaction, message

    async def followup(self, request: web.Request) -> web.Response:
        interaction = self._webhook_interaction(request)
        payload, uploads = await read_body(request)
        original = interaction.original
        if original is not None and original.flags & LOADING:
            # A deferred answer's first follow-up fills in the "thinking..." message.
            result = apply_edit(self.hub, original, payload, uploads)
            interaction.followups.append(original)
        else:
            message = self._response_message(interaction, payload, uploads, ix.CHANNEL_MESSAGE)
            message.type = 0
            interaction.followups.append(message)
            result = self.hub.message_payload(message)
        if request.query.get("wait", "false").lower() not in ("true", "1"):
            return web.Response(status=204)
        return json_response(result)

    async def webhook_get(self, request: web.Request) -> web.Response:
        _, message = self._webhook_message(request)
        return json_response(self.hub.message_payload(message))

    async def webhook_edit(self, request: web.Request) -> web.Response:
        _, message = self._webhook_message(request)
        payload, uploads = await read_body(request)
        return json_response(apply_edit(self.hub, message, payload, uploads))

    async def webhook_delete(self, request: web.Request) -> web.Response:
        _, message = self._webhook_message(request)
        self.hub.deleted(message)
        return web.Response(status=204)


def _message_type(interaction: ix.Interaction) -> int:
    """CHAT_INPUT_COMMAND (20), CONTEXT_MENU_COMMAND (23), or DEFAULT (0) for components."""
    if interaction.type != ix.APPLICATION_COMMAND:
        return 0
    return 20 if interaction.payload["data"].get("type", ix.CHAT_INPUT) == ix.CHAT_INPUT else 23
