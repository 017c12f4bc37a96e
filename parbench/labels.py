"""parbench's label coding, one definition for readers, losses and metrics: 0 negative, 1 positive,
255 unspecified (RAP's uncertain 2, WIDER's 0). What 255 means for scoring is the `unspecified` setting."""

NEGATIVE = 0
POSITIVE = 1
UNSPECIFIED = 255
