"""The ground floor: settings and every path, the data set spec (and ``specs/``), the text
template, io helpers and shared names. Imports nothing of the project and sets no environment."""
