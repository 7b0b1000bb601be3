"""One turn of a conversation: take the conversation's lock, update its state with the lock's
fencing token, hand the follow-up to a queue (the worked example of docs/coordination.md)."""


def turn(event, ctx):
    coord = ctx.coord
    conv = event["conversation"]
    with coord.lock(f"conv/{conv}", ttl=5, timeout=15) as lk:
        state = coord.get_state(f"conv/{conv}", {"turns": 0, "messages": []})
        state["turns"] += 1
        state["messages"].append(event["message"])
        coord.set_state(f"conv/{conv}", state, fence=lk)
        coord.put("followups", {"conversation": conv, "turn": state["turns"]}, priority=event.get("priority", 0))
    coord.atomic_increment("turns/total")
    return {"turns": state["turns"], "token": lk.token}
