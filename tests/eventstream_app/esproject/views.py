"""The event stream (django-eventstream's own view) and the controls the tests drive.

The controls are called by the tests directly (not through the proxy). Each publishes
synchronously, so a control's answer means the proxy has the item.
"""

from django.http import HttpResponseForbidden, JsonResponse
from django_eventstream import send_event
from django_eventstream.utils import get_storage, publish_kick
from django_eventstream.views import events as eventstream_events


def events(request):
    """django-eventstream's view, only for requests the proxy signed with its key: otherwise
    the view would stream by itself and a test could pass without the proxy doing its work."""
    if not request.grip.signed:
        return HttpResponseForbidden("unsigned request\n")
    return eventstream_events(request)


def send(request):
    """send_event(channel, "message", data), `skip` a comma-separated list of user ids."""
    skip = [u for u in request.GET.get("skip", "").split(",") if u]
    channel = request.GET["channel"]
    send_event(
        channel,
        "message",
        request.GET["data"],
        skip_user_ids=skip,
        async_publish=False,
        json_encode=False,
    )
    return JsonResponse({"id": get_storage().get_current_id(channel)})


def send_many(request):
    """`count` events "<data> <n>" on one channel, published one by one."""
    channel = request.GET["channel"]
    for n in range(int(request.GET["count"])):
        send_event(
            channel,
            "message",
            f"{request.GET['data']} {n + 1}",
            async_publish=False,
            json_encode=False,
        )
    return JsonResponse({"id": get_storage().get_current_id(channel)})


def store(request):
    """An event stored but never published: what a lost publish leaves behind."""
    event = get_storage().append_event(request.GET["channel"], "message", request.GET["data"])
    return JsonResponse({"id": event.id})


def kick(request):
    """What channel_permission_changed does once a user may no longer read a channel."""
    publish_kick(request.GET.get("user", "anonymous"), request.GET["channel"])
    return JsonResponse({"kicked": True})


def grip_check(request):
    return JsonResponse(
        {
            "proxied": request.grip.proxied,
            "signed": request.grip.signed,
            "last": request.grip.last,
            "headers": sorted(k for k in request.META if k.startswith("HTTP_")),
        },
        json_dumps_params={"sort_keys": True},
    )
