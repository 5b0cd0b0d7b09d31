"""The pages behind the sidebar: Chat, Images, Models and Settings."""
