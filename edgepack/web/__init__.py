"""The browser as a device: onnxruntime-web and ONNX.js in headless Chromium (issue 17).

runtime.py fetches and caches the pinned JavaScript packages, server.py serves a run's files on
loopback, browser.py drives Chromium and runs the page in page/.
"""
