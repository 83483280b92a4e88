"""The reference client's metadata application properties for an outgoing MsgHead.

Helsenorge.Messaging (HNM) adds, unless disabled, properties extracted from the
plaintext MsgHead to every message it sends, and NHN's operations use them to
find a message on the bus without decrypting it (DOMAIN.md §5.3). The names
below are the constants of HNM's `src/Helsenorge.Messaging/Amqp/MetadataKeys.cs`
and the values follow `MetadataHelper.ExtractMessagePropertiesFromMsgHead`
(helsenorge/Helsenorge.Messaging, read 2026-11-29):

* `X-MessageInfo-Type` = `MsgInfo/Type/@V`, `X-MessageInfo-MsgId` = `MsgInfo/MsgId`;
* `X-Sender-Lvl1Id` / `X-Receiver-Lvl1Id` = the HER-id `Ident` of `Sender|Receiver/
  Organisation`, `…-Lvl2Id` = that of the nested `Organisation` (or
  `HealthcareProfessional`); each only when present;
* `X-MessageInfo-SchemaNamespace` = the namespace of the first Document's content root;
* `X-AttachmentInfo-Count`, `-TotalSizeInBytes` (documents after the first) and
  `-HasExternalReference` (.NET `bool.ToString()`: `True`/`False`), always.
* `X-MessageInfo-RefToParent` / `-RefToConversation` only with a `ConversationRef`,
  which iplosctl's MsgHead has not.

They are built here from the values `build_msghead` is given rather than by
parsing a 20 MB MsgHead again; tests/test_message_properties.py extracts them
from the real MsgHead with HNM's XPaths and checks the two agree. UNVERIFIED:
whether KPR's receiver reads any of them (HNM receivers do not require them).
"""

from __future__ import annotations

MESSAGE_INFO_TYPE = "X-MessageInfo-Type"
MESSAGE_INFO_MSG_ID = "X-MessageInfo-MsgId"
MESSAGE_INFO_SCHEMA_NAMESPACE = "X-MessageInfo-SchemaNamespace"
SENDER_LVL1_ID = "X-Sender-Lvl1Id"
SENDER_LVL2_ID = "X-Sender-Lvl2Id"
RECEIVER_LVL1_ID = "X-Receiver-Lvl1Id"
RECEIVER_LVL2_ID = "X-Receiver-Lvl2Id"
ATTACHMENT_COUNT = "X-AttachmentInfo-Count"
ATTACHMENT_TOTAL_SIZE = "X-AttachmentInfo-TotalSizeInBytes"
ATTACHMENT_HAS_EXTERNAL_REFERENCE = "X-AttachmentInfo-HasExternalReference"


def message_info_properties(
    *,
    msg_type: str,
    msg_id: str,
    sender_her_id: str,
    sender_service_her_id: str,
    receiver_her_id: str,
    schema_namespace: str,
) -> dict[str, str]:
    """HNM's metadata properties for a MsgHead built by `build_msghead` with these values.

    No personal data: types, ids, HER-ids of organisations and a namespace only.
    """
    return {
        MESSAGE_INFO_TYPE: msg_type,
        MESSAGE_INFO_MSG_ID: msg_id,
        SENDER_LVL1_ID: sender_her_id,
        SENDER_LVL2_ID: sender_service_her_id,
        RECEIVER_LVL1_ID: receiver_her_id,
        MESSAGE_INFO_SCHEMA_NAMESPACE: schema_namespace,
        ATTACHMENT_COUNT: "0",
        ATTACHMENT_TOTAL_SIZE: "0",
        ATTACHMENT_HAS_EXTERNAL_REFERENCE: "False",
    }
