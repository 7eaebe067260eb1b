from django.db import models


class Member(models.Model):
    email = models.EmailField()
    welcomed = models.BooleanField(default=False)
