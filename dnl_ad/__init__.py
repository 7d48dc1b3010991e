"""dnl_ad: the alert daemon for DNL Class 4 softswitch carriers."""

__version__ = "1.0.0"
