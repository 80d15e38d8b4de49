"""Core ML export: conversion-ready rewrites of the refocuser's modules, conversion to
mlprogram packages, compression, chunking and spec checks (no Mac needed to build)."""
