from django.urls import path

from . import views

urlpatterns = [
    path("events/", views.events),
    path("send/", views.send),
    path("send-many/", views.send_many),
    path("store/", views.store),
    path("kick/", views.kick),
    path("grip-check/", views.grip_check),
]
